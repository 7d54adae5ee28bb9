"""GLDv2 retrieval and recognition end to end: Kaggle submission CSVs.

* Retrieval: every test query is searched in an index of the index-set global
  descriptors; the top 100 (optionally re-ranked by local-feature verification:
  ``(inliers, similarity)`` descending, as DELG re-ranks) become a row
  ``id,images`` with 100 space-separated index ids, the file
  ``compute_retrieval_metrics.py`` scores (mAP@100).
* Recognition: every test query is searched in an index of the TRAIN descriptors;
  its ``k`` nearest neighbours vote for their landmark with their similarity (with
  verification: with their inlier count plus similarity; indexed images without a
  label, e.g. non-landmarks, do not vote); the winner and its vote
  divided by ``k`` become a row ``id,landmarks`` = ``"<landmark_id> <confidence>"``,
  the file ``compute_recognition_metrics.py`` scores (GAP).

Both split the queries with ``num_shards`` / ``shard_index`` (contiguous ranges,
written to ``<output>.shard-i-of-n``); ``index_jobs.merge_shards`` concatenates them
into the file a single run writes.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import sys
from typing import TextIO

import numpy as np

from delf.retrieval import index_jobs, rerank_parallel, reranking

NUM_PREDICTIONS = 100
LOCAL_EXTENSION = ".delg_local"


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """Inputs of a GLDv2 run (retrieval: ``labels_path`` unused)."""

  queries_path: str
  index_path: str
  output_path: str
  index_features_path: str = ""  # Store/folder the index was built from (checks, local features).
  query_local_path: str = ""  # Local features of the queries (default: queries_path).
  labels_path: str = ""  # Recognition: CSV with columns id and landmark_id (train.csv).
  k: int = 0  # Retrieval: results per query (default 100); recognition: voters (default 5).
  use_geometric_verification: bool = False
  num_to_rerank: int = 100
  local_descriptor_matching_threshold: float = 1.0
  ransac_residual_threshold: float = 20.0
  use_ratio_test: bool = False
  num_workers: int = 1
  num_shards: int = 1
  shard_index: int = 0
  batch_size: int = 1024


def _search(config: TaskConfig, k: int, out: TextIO):
  index, vectors = index_jobs.open_index(config.index_path, config.index_features_path)
  query_ids, queries = index_jobs.load_queries(config.queries_path)
  share = index_jobs.shard_range(len(query_ids), config.num_shards, config.shard_index)
  query_ids, queries = [query_ids[i] for i in share], queries[share.start : share.stop]
  print(
    f"Searching {len(query_ids)} queries (shard {config.shard_index} of {config.num_shards}) "
    f"in {index.num_vectors} images",
    file=out,
    flush=True,
  )
  result = index.search(
    queries, k, batch_size=config.batch_size, refine_vectors=vectors, refine_factor=4
  )
  return index, query_ids, result


def _verify(
  config: TaskConfig,
  query_ids: list[str],
  candidate_ids: list[list[str]],
  out: TextIO,
) -> dict[tuple[str, str], int]:
  if not config.index_features_path:
    raise ValueError(
      "geometric verification needs --index_features_path (the index images' features)"
    )
  pairs = {q: c[: config.num_to_rerank] for q, c in zip(query_ids, candidate_ids)}
  options = reranking.MatchingOptions(
    ransac_seed=0,
    descriptor_matching_threshold=config.local_descriptor_matching_threshold,
    ransac_residual_threshold=config.ransac_residual_threshold,
    use_ratio_test=config.use_ratio_test,
  )
  report = reranking.VerificationReport()
  stats = rerank_parallel.VerificationStats()
  inliers = rerank_parallel.VerifyPairsInProcesses(
    pairs,
    rerank_parallel.FeatureSource(config.query_local_path or config.queries_path, LOCAL_EXTENSION),
    rerank_parallel.FeatureSource(config.index_features_path, LOCAL_EXTENSION),
    options,
    num_workers=config.num_workers,
    report=report,
    stats=stats,
  )
  if report.unreadable:
    print("WARNING: " + report.Summary(), file=out)
  print(
    f"Verified {stats.num_pairs} pairs in {stats.seconds:.1f} s "
    f"({stats.pairs_per_second:.1f} pairs/s, {stats.num_workers} process(es))",
    file=out,
  )
  return inliers


def _candidates(index, result) -> tuple[list[list[str]], list[np.ndarray]]:
  ids, scores = [], []
  for rows, row_scores in zip(result.rows, result.scores):
    valid = rows >= 0
    ids.append([index.ids[r] for r in rows[valid]])
    scores.append(row_scores[valid])
  return ids, scores


def retrieval_submission(config: TaskConfig, out: TextIO | None = None) -> str:
  """Writes the Kaggle retrieval CSV (``id,images``) of this shard; returns its path."""
  out = out or sys.stdout
  k = config.k or NUM_PREDICTIONS
  index, query_ids, result = _search(config, k, out)
  candidate_ids, candidate_scores = _candidates(index, result)
  if config.use_geometric_verification:
    inliers = _verify(config, query_ids, candidate_ids, out)
    for i, query_id in enumerate(query_ids):
      counts = np.array([inliers.get((query_id, c), 0) for c in candidate_ids[i]], dtype=np.int64)
      order = reranking.SortByInliersAndScores(counts, candidate_scores[i])
      candidate_ids[i] = [candidate_ids[i][j] for j in order]
  rows = [[q, " ".join(c)] for q, c in zip(query_ids, candidate_ids)]
  path = index_jobs.shard_path(config.output_path, config.num_shards, config.shard_index)
  index_jobs.write_csv(path, ["id", "images"], rows)
  print(f"Wrote {path} ({len(rows)} queries)", file=out)
  return path


def read_labels(path: str) -> dict[str, int]:
  """``id -> landmark_id`` from a CSV with those columns (GLDv2 ``train.csv``)."""
  labels = {}
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    if not reader.fieldnames or not {"id", "landmark_id"} <= set(reader.fieldnames):
      raise ValueError(f"{path}: expected columns id and landmark_id, got {reader.fieldnames}")
    for line, row in enumerate(reader, start=2):
      try:
        labels[row["id"]] = int(row["landmark_id"])
      except (TypeError, ValueError):
        raise ValueError(f"{path}:{line}: landmark_id must be an integer") from None
  return labels


def vote(neighbor_labels: list[int], weights: np.ndarray, k: int) -> tuple[int, float]:
  """Label with the largest summed weight (ties: the earlier neighbour's) and weight / k."""
  totals: dict[int, float] = collections.defaultdict(float)
  for label, weight in zip(neighbor_labels, weights):
    totals[label] += float(weight)
  best = max(totals, key=lambda label: (totals[label], -neighbor_labels.index(label)))
  return best, totals[best] / k


def recognition_submission(config: TaskConfig, out: TextIO | None = None) -> str:
  """Writes the Kaggle recognition CSV (``id,landmarks``) of this shard; returns its path."""
  out = out or sys.stdout
  if not config.labels_path:
    raise ValueError("recognition needs --labels_path (a CSV with id,landmark_id of the index)")
  labels = read_labels(config.labels_path)
  k = config.k or 5
  index, query_ids, result = _search(config, k, out)
  unlabelled = sum(1 for i in index.ids if i not in labels)
  if unlabelled == len(index.ids):
    raise ValueError(f"{config.labels_path}: none of the {unlabelled} indexed images has a label")
  if unlabelled:
    print(
      f"{unlabelled} indexed image(s) without landmark_id (non-landmarks) do not vote", file=out
    )
  candidate_ids, candidate_scores = _candidates(index, result)
  inliers = {}
  if config.use_geometric_verification:
    inliers = _verify(config, query_ids, candidate_ids, out)
  rows = []
  for query_id, ids, scores in zip(query_ids, candidate_ids, candidate_scores):
    if not ids:
      rows.append([query_id, ""])
      continue
    weights = np.asarray(scores, np.float64)
    if config.use_geometric_verification:
      weights = weights + np.array([inliers.get((query_id, c), 0) for c in ids], np.float64)
    voters = [j for j, c in enumerate(ids) if c in labels]
    if not voters:
      rows.append([query_id, ""])
      continue
    label, confidence = vote([labels[ids[j]] for j in voters], weights[voters], k)
    rows.append([query_id, f"{label} {confidence:.6f}"])
  path = index_jobs.shard_path(config.output_path, config.num_shards, config.shard_index)
  index_jobs.write_csv(path, ["id", "landmarks"], rows)
  print(f"Wrote {path} ({len(rows)} queries)", file=out)
  return path
