"""Benchmark: matching two images' local features (performance.md §5).

Usage:
  .venv/bin/python bench/match.py [--repeats 5] [--num_features 1000] [--dim 1024] [--script]

Data: image 1 = the reference's 1000 x 1024-D DELF features of query_00.jpg
(../shared/data/interop/delf_local_query_00.delf) when available, else random unit
descriptors. Image 2 = 1000 features: 300 noisy copies of image-1 features moved by an
affine map (+-8 px jitter, 10 % of them displaced as outliers), 700 unrelated features.
Times per pair: ours (delf.matching.match: matrix-product NN + vectorised RANSAC) and
the reference's algorithm in-process (SciPy cKDTree query + Python loop for the
putative pairs + scikit-image ransac/AffineTransform), each over several RANSAC seeds.
--script also times the whole `scripts/match_images.py` process (imports, read, match,
plot). Reference figures on the 2-vCPU machine: 0.74-0.87 s per pair, 178-212 inliers,
6.64 s for the whole script.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from delf import feature_io, matching  # noqa: E402

INTEROP = REPO.parent / "shared" / "data" / "interop" / "delf_local_query_00.delf"


def make_pair(num_features: int, dim: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  if INTEROP.is_file() and dim == 1024 and num_features <= 1000:
    locations_1, _, descriptors_1, _, _ = feature_io.ReadFromFile(str(INTEROP))
    locations_1, descriptors_1 = locations_1[:num_features], descriptors_1[:num_features]
    source = "interop delf_local_query_00.delf"
  else:
    descriptors_1 = rng.standard_normal([num_features, dim])
    descriptors_1 /= np.linalg.norm(descriptors_1, axis=1, keepdims=True)
    locations_1 = rng.uniform(0, [480, 640], [num_features, 2])
    source = "random unit descriptors"
  n = len(descriptors_1)
  num_true = int(0.3 * n)
  chosen = rng.choice(n, num_true, replace=False)
  affine = np.array([[0.95, 0.1, 20.0], [-0.08, 1.05, -15.0], [0, 0, 1]])
  loc_true = (np.c_[locations_1[chosen], np.ones(num_true)] @ affine.T)[:, :2]
  loc_true += rng.uniform(-8, 8, loc_true.shape)
  displaced = rng.random(num_true) < 0.1
  loc_true[displaced] += rng.uniform(50, 200, [displaced.sum(), 2])
  desc_true = descriptors_1[chosen] + rng.standard_normal([num_true, dim]) * (0.3 / np.sqrt(dim))
  others = rng.standard_normal([n - num_true, dim])
  desc_2 = np.concatenate([desc_true, others])
  desc_2 /= np.linalg.norm(desc_2, axis=1, keepdims=True)
  loc_2 = np.concatenate([loc_true, rng.uniform(0, [480, 640], [n - num_true, 2])])
  order = rng.permutation(n)
  features_1 = matching.LocalFeatures(locations_1, descriptors_1)
  features_2 = matching.LocalFeatures(loc_2[order], desc_2[order])
  return features_1, features_2, source


def reference_match(features_1, features_2, seed):
  """The reference's match_images.py algorithm (seeded) on current SciPy/scikit-image."""
  from scipy.spatial import cKDTree
  from skimage.measure import ransac
  from skimage.transform import AffineTransform

  tree = cKDTree(features_1.descriptors)
  _, indices = tree.query(features_2.descriptors, distance_upper_bound=0.8)
  n1 = features_1.num_features
  locations_2_to_use = np.array(
    [features_2.locations[i] for i in range(features_2.num_features) if indices[i] != n1]
  )
  locations_1_to_use = np.array(
    [features_1.locations[indices[i]] for i in range(features_2.num_features) if indices[i] != n1]
  )
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _, inliers = ransac(
      (locations_1_to_use, locations_2_to_use),
      AffineTransform,
      min_samples=3,
      residual_threshold=20,
      max_trials=1000,
      rng=seed,
    )
  return int(np.sum(inliers))


def time_script(features_1, features_2) -> float:
  from PIL import Image

  with tempfile.TemporaryDirectory() as tmp:
    args = []
    for i, features in ((1, features_1), (2, features_2)):
      path = os.path.join(tmp, f"{i}.delf")
      n = features.num_features
      feature_io.WriteToFile(path, features.locations, np.ones(n), features.descriptors, np.ones(n))
      image = os.path.join(tmp, f"{i}.jpg")
      Image.fromarray(np.random.default_rng(i).integers(0, 255, [480, 640, 3], np.uint8)).save(
        image
      )
      args += [f"--features_{i}_path={path}", f"--image_{i}_path={image}"]
    args.append(f"--output_image={os.path.join(tmp, 'out.png')}")
    start = time.perf_counter()
    subprocess.run(
      [sys.executable, str(REPO / "scripts" / "match_images.py"), *args],
      check=True,
      capture_output=True,
      cwd=REPO,
    )
    return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--num_features", type=int, default=1000)
  parser.add_argument("--dim", type=int, default=1024)
  parser.add_argument("--script", action="store_true")
  args = parser.parse_args()
  features_1, features_2, source = make_pair(args.num_features, args.dim)
  print(
    f"data: {features_1.num_features} vs {features_2.num_features} features, "
    f"{features_1.descriptors.shape[1]}-D ({source})"
  )
  matching.match(features_1, features_2, seed=0)  # Warm up.
  reference_match(features_1, features_2, 0)
  rows = []
  for name, fn in (
    ("ours (delf.matching)", lambda s: matching.match(features_1, features_2, seed=s).num_inliers),
    (
      "reference algorithm (cKDTree + skimage)",
      lambda s: reference_match(features_1, features_2, s),
    ),
  ):
    times, inliers = [], []
    for seed in range(args.repeats):
      start = time.perf_counter()
      inliers.append(fn(seed))
      times.append(time.perf_counter() - start)
    rows.append((name, np.median(times), min(times), max(times), min(inliers), max(inliers)))
  print(f"{'method':42s} {'median s/pair':>13s} {'min':>7s} {'max':>7s} {'inliers':>11s}")
  for name, median, low, high, in_low, in_high in rows:
    print(f"{name:42s} {median:13.4f} {low:7.4f} {high:7.4f} {in_low:5d}-{in_high:<5d}")
  print(
    f"speed-up vs in-process reference algorithm: {rows[1][1] / rows[0][1]:.1f}x; "
    f"vs the reference's measured 0.74-0.87 s: {0.74 / rows[0][1]:.1f}-{0.87 / rows[0][1]:.1f}x"
  )
  if args.script:
    wall = time_script(features_1, features_2)
    print(f"whole scripts/match_images.py process: {wall:.2f} s (reference 6.64 s)")


if __name__ == "__main__":
  main()
