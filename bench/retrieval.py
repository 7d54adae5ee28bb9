"""Benchmark: geometric-verification re-ranking, ours vs the reference's approach.

The reference re-ranks each query once per protocol (medium, hard), reading the
query's and each of the 100 candidates' local-feature files from disk every time
and matching every pair anew (full nearest-neighbour search, then RANSAC). Ours
(``delf.retrieval.retrieval.perform_retrieval``) reads each file once, matches
each distinct (query, index image) pair once for both protocols, skips query
features that cannot have a neighbour within the distance bound, and can use
threads. Both produce the same rankings, which this script checks.

Synthetic features on disk: every image has ``--num_features`` 128-D unit
descriptors (DELG's local descriptor size); about 8 % of the index images
show one query's scene under an affine map (those give inliers), the
rest are unrelated. Global descriptors rank distractors and positives mixed.

On a shared machine set OPENBLAS_NUM_THREADS=1 (BLAS threads spin and blur the
CPU-time column); the CPU ratio is the fairer figure when the machine is busy.

Usage:
  OPENBLAS_NUM_THREADS=1 python -m bench.retrieval [--num_queries=2] [--num_index=150] [--num_features=1000] [--workers=2]
  python -m bench.retrieval --dataset_file_path=demo/gnd_demo.mat \
    --query_features_dir=demo/features/query --index_features_dir=demo/features/index
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from delf import datum_io, feature_io, matching
from delf.retrieval import demo_benchmark, metrics_file, reranking, retrieval, revisited

_DIM = 128


def _unit(x: np.ndarray) -> np.ndarray:
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_benchmark(root: str, num_queries: int, num_index: int, num_features: int, seed: int = 0):
  """Writes features and a JSON ground truth; returns the ground-truth path."""
  rng = np.random.default_rng(seed)
  query_dir, index_dir = os.path.join(root, "query"), os.path.join(root, "index")
  os.makedirs(query_dir, exist_ok=True)
  os.makedirs(index_dir, exist_ok=True)
  global_dim = 32
  index_names = [f"index_{j:05d}" for j in range(num_index)]
  query_names = [f"query_{i:03d}" for i in range(num_queries)]
  scenes = []
  for name in query_names:
    locations = rng.uniform(0, 500, (num_features, 2))
    descriptors = _unit(rng.normal(size=(num_features, _DIM)))
    scenes.append((locations, descriptors))
    _write_local(os.path.join(query_dir, name + ".delg_local"), locations, descriptors)
    datum_io.WriteToFile(
      _unit(rng.normal(size=global_dim)), os.path.join(query_dir, name + ".delg_global")
    )
  owner = rng.integers(0, num_queries, num_index)  # Scene shown by each related index image.
  related = rng.random(num_index) < 0.08
  ground_truth = []
  for i in range(num_queries):
    positives = np.flatnonzero(related & (owner == i))
    half = len(positives) // 2
    ground_truth.append(
      {
        "easy": positives[:half],
        "hard": positives[half:],
        "junk": np.array([], dtype=np.int64),
        "bbx": np.array([0.0, 0.0, 500.0, 500.0]),
      }
    )
  for j, name in enumerate(index_names):
    if related[j]:
      locations, descriptors = scenes[owner[j]]
      count = int(rng.integers(num_features // 4, num_features // 2))
      keep = rng.choice(num_features, count, replace=False)
      matrix = np.array([[0.8, 0.2], [-0.15, 1.1]])
      moved = locations[keep] @ matrix.T + rng.uniform(-30, 30, 2)
      noisy = _unit(descriptors[keep] + rng.normal(scale=0.03, size=(count, _DIM)))
      others = _unit(rng.normal(size=(num_features - count, _DIM)))
      locations = np.concatenate([moved, rng.uniform(0, 500, (num_features - count, 2))])
      descriptors = np.concatenate([noisy, others])
    else:
      locations = rng.uniform(0, 500, (num_features, 2))
      descriptors = _unit(rng.normal(size=(num_features, _DIM)))
    _write_local(os.path.join(index_dir, name + ".delg_local"), locations, descriptors)
    datum_io.WriteToFile(
      _unit(rng.normal(size=global_dim)), os.path.join(index_dir, name + ".delg_global")
    )
  # A few junk images per query (they must stay out of the candidates).
  for i, entry in enumerate(ground_truth):
    entry["junk"] = np.flatnonzero(~related)[i * 3 : i * 3 + 3]
  path = os.path.join(root, "gnd_bench.json")
  demo_benchmark.SaveGroundTruthJson(path, query_names, index_names, ground_truth)
  return path


def _write_local(path: str, locations: np.ndarray, descriptors: np.ndarray) -> None:
  n = len(locations)
  feature_io.WriteToFile(path, locations, np.ones(n), descriptors, np.ones(n))


def _reference_match(query: matching.LocalFeatures, index: matching.LocalFeatures) -> int:
  """The reference's MatchFeatures: full NN search of query in index, RANSAC index->query."""
  if not query.num_features or not index.num_features:
    return 0
  pairs = matching.putative_matches(index.descriptors, query.descriptors, 1.0, False)
  if pairs.shape[0] <= 3:
    return 0
  _, inliers = matching.ransac_affine(
    index.locations[pairs[:, 0]],
    query.locations[pairs[:, 1]],
    residual_threshold=20.0,
    max_trials=1000,
    min_samples=3,
    seed=0,
  )
  return int(np.count_nonzero(inliers))


def reference_retrieval(dataset_path: str, query_dir: str, index_dir: str) -> dict[str, np.ndarray]:
  """The reference's loop: per query and protocol, re-read and re-match every candidate."""
  query_list, index_list, ground_truth = revisited.ReadDatasetFile(dataset_path)
  _, medium, hard = revisited.ParseEasyMediumHardGroundTruth(ground_truth)
  with open(os.devnull, "w") as quiet:
    query_global, _ = retrieval.LoadGlobalDescriptors(query_dir, query_list, out=quiet)
    index_global, _ = retrieval.LoadGlobalDescriptors(index_dir, index_list, out=quiet)
  similarities, ranks = retrieval.RankByGlobalSimilarity(query_global, index_global)
  results = {}
  for name, protocol in (("medium", medium), ("hard", hard)):
    after = np.zeros_like(ranks)
    for i, query_name in enumerate(query_list):
      query = matching.LocalFeatures.from_file(os.path.join(query_dir, query_name + ".delg_local"))
      inliers = np.zeros(len(index_list), dtype=np.int64)
      for j in reranking.RerankingCandidates(ranks[i], protocol[i]["junk"]):
        index = matching.LocalFeatures.from_file(
          os.path.join(index_dir, index_list[j] + ".delg_local")
        )
        inliers[j] = _reference_match(query, index)
      after[i] = reranking.SortByInliersAndScores(inliers, similarities[i])
    results[name] = after
  return results


def compare(dataset_path: str, query_dir: str, index_dir: str, output_root: str, workers: int):
  """Times both approaches on the same features; fails if the rankings differ."""
  start, cpu_start = time.perf_counter(), time.process_time()
  reference = reference_retrieval(dataset_path, query_dir, index_dir)
  reference_seconds = time.perf_counter() - start
  reference_cpu = time.process_time() - cpu_start
  timings = {}
  cpu_timings = {}
  outputs = {}
  for num_workers in sorted({1, workers}):
    config = retrieval.RetrievalConfig(
      dataset_file_path=dataset_path,
      query_features_dir=query_dir,
      index_features_dir=index_dir,
      use_geometric_verification=True,
      output_dir=os.path.join(output_root, f"out_{num_workers}"),
      num_workers=num_workers,
    )
    with open(os.devnull, "w") as quiet:
      start, cpu_start = time.perf_counter(), time.process_time()
      outputs[num_workers] = retrieval.perform_retrieval(config, out=quiet)
      timings[num_workers] = time.perf_counter() - start
      cpu_timings[num_workers] = time.process_time() - cpu_start
    for name in ("medium", "hard"):
      if not np.array_equal(outputs[num_workers].ranks_after_gv[name], reference[name]):
        raise SystemExit(f"rankings differ from the reference approach ({name}, {num_workers})")
  num_queries = reference["medium"].shape[0]
  header = ("approach", "wall s", "s/query", "speed-up", "CPU s", "CPU ratio")
  print(f"{header[0]:44s} " + " ".join(f"{h:>9s}" for h in header[1:]))
  rows = [("reference (re-read + re-match per protocol)", reference_seconds, reference_cpu)]
  for num_workers, seconds in timings.items():
    label = f"ours (each file/pair once, {num_workers} thread{'s' if num_workers > 1 else ''})"
    rows.append((label, seconds, cpu_timings[num_workers]))
  for label, seconds, cpu in rows:
    print(
      f"{label:44s} {seconds:9.2f} {seconds / num_queries:9.3f} "
      f"{reference_seconds / seconds:9.2f} {cpu:9.2f} {reference_cpu / cpu:9.2f}"
    )
  result = outputs[1]
  print("\nrankings identical to the reference approach; metrics.txt:")
  print(
    metrics_file.FormatMetrics(
      result.mean_average_precision, result.mean_precisions, result.mean_recalls, (1, 5, 10)
    )
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_queries", type=int, default=2)
  parser.add_argument("--num_index", type=int, default=150)
  parser.add_argument("--num_features", type=int, default=1000)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument(
    "--dataset_file_path", help="Use existing features (e.g. the demo's) instead of synthetic."
  )
  parser.add_argument("--query_features_dir")
  parser.add_argument("--index_features_dir")
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as root:
    if args.dataset_file_path:
      print(f"features of {args.dataset_file_path}")
      compare(
        args.dataset_file_path, args.query_features_dir, args.index_features_dir, root, args.workers
      )
      return
    start = time.perf_counter()
    dataset_path = make_benchmark(root, args.num_queries, args.num_index, args.num_features)
    print(f"synthetic benchmark written in {time.perf_counter() - start:.1f} s")
    print(
      f"{args.num_queries} queries x 2 protocols, top-100 candidates, {args.num_index} index "
      f"images, {args.num_features} local features each ({_DIM}-D)"
    )
    compare(
      dataset_path, os.path.join(root, "query"), os.path.join(root, "index"), root, args.workers
    )


if __name__ == "__main__":
  main()
