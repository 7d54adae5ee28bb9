"""Matching: the same .delf pair and the same seed give the same inliers.

The pair: the DELG local features the reference extracted from one demo image,
and a second set made from them by a known affine map (+1 px noise) with
slightly perturbed descriptors, some features moved to random places
(putative matches that RANSAC must reject) and some unrelated ones (no
match). Both ``match_images.py`` run on it; the reference's RANSAC (unseeded
upstream, KB-49) gets ``rng=0`` through ``reference_side/run_script.py``, which
also saves the inlier mask scikit-image returned; ours runs with ``--seed=0``.
Compared: the printed inlier count and the inlier mask over the putative
matches (both list them in the second image's feature order).
"""

from __future__ import annotations

import re

import numpy as np

from fidelity.compare import Row
from fidelity.runner import Context, side_by_side

SEED = 0


def make_pair(source: str, first: str, second: str) -> int:
  """Writes the two .delf files; returns the number of features of the second."""
  from delf import feature_io

  locations, scales, descriptors, attention, _ = feature_io.ReadFromFile(source)
  rng = np.random.default_rng(11)
  n = locations.shape[0]
  affine = np.array([[0.9, 0.15], [-0.1, 1.05]])
  moved = locations @ affine.T + np.array([12.0, -7.0]) + rng.normal(0, 1.0, size=(n, 2))
  noisy = descriptors + rng.normal(0, 0.03, size=descriptors.shape)
  noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
  relocated = rng.random(n) < 0.25
  moved[relocated] = rng.uniform(0, 200, size=(int(relocated.sum()), 2))
  unrelated = rng.normal(size=(n // 5, descriptors.shape[1]))
  unrelated /= np.linalg.norm(unrelated, axis=1, keepdims=True)
  order = rng.permutation(n + n // 5)
  locations_2 = np.concatenate([moved, rng.uniform(0, 200, size=(n // 5, 2))])[order]
  descriptors_2 = np.concatenate([noisy, unrelated])[order]
  feature_io.WriteToFile(first, locations, scales, descriptors, attention)
  feature_io.WriteToFile(
    second,
    locations_2,
    np.ones(len(order)),
    descriptors_2.astype(np.float32),
    np.ones(len(order)),
  )
  return len(order)


def _inliers(output: str) -> int | None:
  found = re.findall(r"Found (\d+) inliers", output)
  return int(found[-1]) if found else None


def run(ctx: Context, source_delf: str, images: list[str]) -> list[Row]:
  first, second = ctx.path("match", "pair_1.delf"), ctx.path("match", "pair_2.delf")
  make_pair(source_delf, first, second)
  common = [
    f"--image_1_path={images[0]}",
    f"--image_2_path={images[1]}",
    f"--features_1_path={first}",
    f"--features_2_path={second}",
  ]
  ref_mask = ctx.path("match", "reference_inliers.npy")
  our_mask = ctx.path("match", "ours.npz")

  def reference():
    return ctx.ref_side(
      "match_reference",
      "run_script.py",
      [
        f"--ransac_seed={SEED}",
        f"--ransac_inliers={ref_mask}",
        ctx.reference.delf_script("examples/match_images.py"),
        *common,
        f"--output_image={ctx.path('match', 'reference.png')}",
      ],
    ).stdout

  def ours():
    out = ctx.ours(
      "match_ours",
      [
        "scripts/match_images.py",
        *common,
        f"--seed={SEED}",
        f"--output_image={ctx.path('match', 'ours.png')}",
      ],
    ).stdout
    ctx.our_side("match_ours_mask", "match_inliers", [first, second, str(SEED), our_mask])
    return out

  ref_out, our_out = side_by_side(reference, ours)
  ref_count, our_count = _inliers(ref_out), _inliers(our_out)
  theirs = np.load(ref_mask)
  with np.load(our_mask) as f:
    mine = f["inliers"]
  mask_diff = int(np.count_nonzero(theirs != mine)) if theirs.shape == mine.shape else -1
  count_diff = abs(ref_count - our_count) if None not in (ref_count, our_count) else float("inf")
  return [
    Row(
      "matching: inlier count (seed 0)",
      count_diff,
      0,
      f"reference {ref_count}, ours {our_count} of {theirs.shape[0]} putative matches",
    ),
    Row(
      "matching: inlier mask",
      mask_diff if mask_diff >= 0 else float("inf"),
      0,
      "same putative matches, same inliers" if mask_diff == 0 else "",
    ),
  ]
