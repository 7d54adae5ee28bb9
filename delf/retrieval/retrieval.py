"""DELG retrieval on a Revisited Oxford/Paris style benchmark (inference.md §5.2).

Ranks every index image for every query by the dot product of their global
descriptors (cosine similarity: descriptors are unit-norm), optionally re-ranks
the top 100 by geometric verification of local features, and writes the
medium/hard metrics to ``<output_dir>/metrics.txt``.

Differences from the reference:

* KB-52: the global ranking is a stable descending sort (exact ties keep
  ascending index id), not NumPy's default sort.
* KB-39/KB-41, issue 8: a missing or wrong-sized global descriptor (e.g. the empty
  descriptor of a tiny image) or a missing/unreadable local-feature file is an
  error naming the files, before any metric is written (the reference crashed; an
  earlier version of ours quietly used zero vectors, which lowers mAP without
  saying why). With ``allow_missing_features`` (``--allow_missing_features``) they
  are reported, replaced by a zero vector (similarity 0, ranked last) or counted as
  0 inliers, and ``metrics.txt`` ends with ``#`` lines saying how many.
* Each distinct (query, index image) pair is verified once for both protocols
  and each feature file is read once (see ``reranking``); the output is the same.
  Verification runs in ``num_workers`` processes (``rerank_parallel``), with the
  same inlier counts for any number of them.
* Similarities are float64 dot products of the stored float32 descriptors
  (``index.inner_products``): the same values whatever the batch, so the exact
  faiss index (``index_path``) ranks exactly as this dense path, ties included.

Beyond the reference: the feature folders may be feature stores
(``delf.feature_store``); ``index_path`` ranks with a prebuilt search index
(``delf.retrieval.index``; index images not in the dataset act as distractors);
α-query expansion and database-side augmentation (``query_expansion``), off by
default.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import TextIO

import numpy as np

from delf import datum_io, feature_store
from delf.progress import ProgressReporter
from delf.retrieval import (
  index as search_index,
)
from delf.retrieval import (
  metrics_file,
  query_expansion,
  rerank_parallel,
  reranking,
  revisited,
)

GLOBAL_FEATURE_EXTENSION = ".delg_global"
LOCAL_FEATURE_EXTENSION = ".delg_local"
PR_RANKS = (1, 5, 10)
METRICS_FILENAME = "metrics.txt"
_STATUS_CHECK_LOAD_ITERATIONS = 50
_MAX_NAMES_REPORTED = 10


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
  """Settings of ``perform_retrieval`` (defaults = the script's flags)."""

  dataset_file_path: str = "/tmp/gnd_roxford5k.mat"
  query_features_dir: str = "/tmp/features/query"
  index_features_dir: str = "/tmp/features/index"
  use_geometric_verification: bool = False
  local_descriptor_matching_threshold: float = 1.0
  ransac_residual_threshold: float = 20.0
  use_ratio_test: bool = False
  output_dir: str = "/tmp/retrieval"
  # Processes for geometric verification (results do not depend on it).
  num_workers: int = 1
  # Beyond the reference (module docstring): a search index, α-QE and DBA (0 = off).
  index_path: str = ""
  query_expansion_top_n: int = 0
  query_expansion_alpha: float = 3.0
  dba_top_n: int = 0
  dba_alpha: float = 3.0
  # Issue 8: rank images without usable features last instead of stopping.
  allow_missing_features: bool = False


@dataclasses.dataclass
class RetrievalResult:
  """Rankings and metrics of one run (metrics are fractions, not percentages)."""

  ranks_before_gv: np.ndarray
  ranks_after_gv: dict[str, np.ndarray]
  mean_average_precision: dict[str, float]
  mean_precisions: dict[str, np.ndarray]
  mean_recalls: dict[str, np.ndarray]
  bad_global_descriptors: dict[str, str]
  unreadable_local_features: dict[str, str]
  metrics_path: str


def _ReadGlobalDescriptor(path: str) -> tuple[np.ndarray | None, str]:
  try:
    descriptor = datum_io.ReadFromFile(path)
  except FileNotFoundError:
    return None, "file not found"
  except Exception as e:  # Corrupt protobuf or unsupported datum: reported, not fatal.
    return None, f"cannot parse ({type(e).__name__}: {e})"
  return np.asarray(descriptor, dtype=np.float32), ""


def LoadGlobalDescriptors(
  features_dir: str,
  names: Sequence[str],
  dimension: int | None = None,
  label: str = "images",
  out: TextIO | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
  """Stacks ``<features_dir>/<name>.delg_global`` descriptors into ``[N, D]`` float32.

  Args:
    features_dir: folder of the descriptor files.
    names: image names, one row each.
    dimension: expected D; None = the most common size among the files read.
    label: what the images are, for the progress lines.
    out: where progress goes (stdout by default).

  Returns:
    ``(descriptors, problems)``: problems maps each missing, unreadable, empty or
    wrong-sized file to what is wrong with it; its row is all zeros (KB-39).

  Raises:
    ValueError: no usable descriptor at all (e.g. a dimension that differs from
      the queries' for every index image: features of another model).
  """
  if feature_store.is_store(features_dir):
    return _LoadGlobalDescriptorsFromStore(features_dir, names, dimension)
  progress = ProgressReporter(
    f"Loading {label} global descriptors",
    total=len(names),
    unit="files",
    every_items=_STATUS_CHECK_LOAD_ITERATIONS,
    stream=out,
  )
  loaded: list[np.ndarray | None] = []
  problems: dict[str, str] = {}
  for name in names:
    path = os.path.join(features_dir, name + GLOBAL_FEATURE_EXTENSION)
    descriptor, problem = _ReadGlobalDescriptor(path)
    if descriptor is not None and (descriptor.ndim != 1 or descriptor.size == 0):
      problem = f"shape {list(descriptor.shape)} is not a non-empty vector"
      descriptor = None
    if problem:
      problems[path] = problem
    loaded.append(descriptor)
    progress.update()
  if dimension is None:
    sizes = collections.Counter(d.size for d in loaded if d is not None)
    if not sizes:
      raise ValueError(f"No global descriptor could be read from {features_dir}")
    dimension = sizes.most_common(1)[0][0]
  descriptors = np.zeros([len(names), dimension], dtype=np.float32)
  for row, (name, descriptor) in enumerate(zip(names, loaded)):
    if descriptor is None:
      continue
    if descriptor.size != dimension:
      path = os.path.join(features_dir, name + GLOBAL_FEATURE_EXTENSION)
      problems[path] = f"dimension {descriptor.size}, expected {dimension}"
      continue
    descriptors[row] = descriptor
  if names and len(problems) == len(names):
    example = next(iter(problems.items()))
    raise ValueError(
      f"No usable global descriptor in {features_dir} (e.g. {example[0]}: {example[1]})"
    )
  return descriptors, problems


def _LoadGlobalDescriptorsFromStore(
  root: str, names: Sequence[str], dimension: int | None
) -> tuple[np.ndarray, dict[str, str]]:
  """``LoadGlobalDescriptors`` for a feature store (same problems and zero rows)."""
  with feature_store.FeatureStore(root) as store:
    if not store.has_global:
      raise ValueError(f"{root}: the feature store holds no global descriptors")
    dimension = dimension or store.global_dim
    descriptors = np.zeros([len(names), dimension], dtype=np.float32)
    problems: dict[str, str] = {}
    for row, name in enumerate(names):
      key = f"{root}[{name}]"
      if name not in store:
        problems[key] = "not in the store"
        continue
      descriptor = store.global_descriptor(name)
      if descriptor.size == 0:
        problems[key] = "shape [0] is not a non-empty vector"
      elif descriptor.size != dimension:
        problems[key] = f"dimension {descriptor.size}, expected {dimension}"
      else:
        descriptors[row] = descriptor
  if names and len(problems) == len(names):
    example = next(iter(problems.items()))
    raise ValueError(f"No usable global descriptor in {root} (e.g. {example[0]}: {example[1]})")
  return descriptors, problems


class MissingFeaturesError(ValueError):
  """Feature files are missing or malformed and --allow_missing_features is not set."""


def _MissingFeaturesMessage(what: str, problems: dict[str, str]) -> str:
  items = sorted(problems.items())
  shown = ", ".join(f"{path} ({problem})" for path, problem in items[:3])
  more = f" and {len(items) - 3} more" if len(items) > 3 else ""
  return (
    f"{len(items)} {what} missing or malformed: {shown}{more}; extract them again "
    "(extract_delg_features.py), or pass --allow_missing_features to rank such images "
    "last (the metrics file then says how many)"
  )


def _MissingLocalFeatures(
  config: RetrievalConfig,
  query_list: Sequence[str],
  index_list: Sequence[str],
  ranks: np.ndarray,
  protocols: dict[str, list[dict]],
) -> dict[str, str]:
  """Local features the re-ranking will read that do not exist (checked up front)."""
  needed: set[str] = set()
  for protocol_ground_truth in protocols.values():
    for i in range(len(query_list)):
      needed.update(
        index_list[j]
        for j in reranking.RerankingCandidates(ranks[i], protocol_ground_truth[i]["junk"])
      )
  query_source = rerank_parallel.FeatureSource(config.query_features_dir, LOCAL_FEATURE_EXTENSION)
  index_source = rerank_parallel.FeatureSource(config.index_features_dir, LOCAL_FEATURE_EXTENSION)
  return {**query_source.missing(query_list), **index_source.missing(sorted(needed))}


def _RaiseIfMissingGlobal(config: RetrievalConfig, bad_global: dict[str, str]) -> None:
  if bad_global and not config.allow_missing_features:
    raise MissingFeaturesError(_MissingFeaturesMessage("global descriptor file(s)", bad_global))


def _ReportProblems(title: str, problems: dict[str, str], out: TextIO) -> None:
  if not problems:
    return
  items = sorted(problems.items())
  print(f"WARNING: {len(items)} {title}", file=out)
  for path, problem in items[:_MAX_NAMES_REPORTED]:
    print(f"  {path}: {problem}", file=out)
  if len(items) > _MAX_NAMES_REPORTED:
    print(f"  ... and {len(items) - _MAX_NAMES_REPORTED} more", file=out)


def RankByGlobalSimilarity(
  query_descriptors: np.ndarray, index_descriptors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """``(similarities [Q, I] float64, ranks [Q, I] int32)``; stable descending sort (KB-52).

  Similarities are ``index.inner_products`` of the float32 descriptors: the same
  values the exact search index orders by, so both give identical rankings.
  """
  similarities = search_index.inner_products(
    np.asarray(query_descriptors, np.float32), np.asarray(index_descriptors, np.float32)
  )
  ranks = np.argsort(-similarities, axis=1, kind="stable").astype(np.int32)
  return similarities, ranks


def _DenseSearch(database: np.ndarray):
  """``search(queries, k)`` over a dense matrix with the exact ranking rule."""

  def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = search_index.inner_products(queries, database)
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, 1), rows

  return search


def perform_retrieval(config: RetrievalConfig, out: TextIO | None = None) -> RetrievalResult:
  """Runs retrieval (and optionally re-ranking) and writes ``metrics.txt``.

  Raises:
    revisited.GroundTruthError: unusable dataset file.
    ValueError: no global descriptor readable, or descriptor dimensions that differ
      between a query's and an index image's local features.
  """
  out = out or sys.stdout
  query_list, index_list, ground_truth = revisited.ReadDatasetFile(config.dataset_file_path)
  _, medium_ground_truth, hard_ground_truth = revisited.ParseEasyMediumHardGroundTruth(ground_truth)
  num_query_images, num_index_images = len(query_list), len(index_list)
  print(f"done! Found {num_query_images} queries and {num_index_images} index images", file=out)

  query_global, query_problems = LoadGlobalDescriptors(
    config.query_features_dir, query_list, label="query", out=out
  )
  if config.index_path:
    similarities, ranks_before_gv, index_names = _RankWithIndex(config, query_global, index_list)
    bad_global = query_problems
    _RaiseIfMissingGlobal(config, bad_global)
  else:
    index_global, index_problems = LoadGlobalDescriptors(
      config.index_features_dir,
      index_list,
      dimension=query_global.shape[1],
      label="index",
      out=out,
    )
    bad_global = {**query_problems, **index_problems}
    _RaiseIfMissingGlobal(config, bad_global)
    if config.dba_top_n:
      print(
        f"Database-side augmentation: top {config.dba_top_n}, alpha {config.dba_alpha}", file=out
      )
      index_global = query_expansion.database_augmentation(
        index_global, _DenseSearch(index_global), config.dba_top_n, config.dba_alpha
      )
    if config.query_expansion_top_n:
      print(
        f"Alpha query expansion: top {config.query_expansion_top_n}, "
        f"alpha {config.query_expansion_alpha}",
        file=out,
      )
      query_global = query_expansion.alpha_query_expansion(
        query_global,
        _DenseSearch(index_global),
        lambda rows: index_global[rows],
        config.query_expansion_top_n,
        config.query_expansion_alpha,
      )
    similarities, ranks_before_gv = RankByGlobalSimilarity(query_global, index_global)
    index_names = list(index_list)
  _ReportProblems(
    "global descriptor file(s) missing or malformed, replaced by zero vectors (KB-39):",
    bad_global,
    out,
  )

  protocols = {"medium": medium_ground_truth, "hard": hard_ground_truth}
  mean_average_precision: dict[str, float] = {}
  mean_precisions: dict[str, np.ndarray] = {}
  mean_recalls: dict[str, np.ndarray] = {}
  for name, protocol_ground_truth in protocols.items():
    mean_ap, precisions, recalls, *_ = revisited.ComputeMetrics(
      ranks_before_gv, protocol_ground_truth, PR_RANKS
    )
    mean_average_precision[name] = mean_ap
    mean_precisions[name] = precisions
    mean_recalls[name] = recalls

  ranks_after_gv: dict[str, np.ndarray] = {}
  report = reranking.VerificationReport()
  if config.use_geometric_verification:
    if not config.allow_missing_features:
      missing_local = _MissingLocalFeatures(
        config, query_list, index_names, ranks_before_gv, protocols
      )
      if missing_local:
        raise MissingFeaturesError(_MissingFeaturesMessage("local-feature file(s)", missing_local))
    ranks_after_gv = _Rerank(
      config, query_list, index_names, similarities, ranks_before_gv, protocols, report, out
    )
    if report.unreadable and not config.allow_missing_features:
      raise MissingFeaturesError(
        _MissingFeaturesMessage("local-feature file(s)", dict(report.unreadable))
      )
    _ReportProblems(
      "local-feature file(s) missing or unreadable, counted as 0 inliers (KB-41):",
      report.unreadable,
      out,
    )
    for name, protocol_ground_truth in protocols.items():
      mean_ap, precisions, recalls, *_ = revisited.ComputeMetrics(
        ranks_after_gv[name], protocol_ground_truth, PR_RANKS
      )
      mean_average_precision[f"{name}_after_gv"] = mean_ap
      mean_precisions[f"{name}_after_gv"] = precisions
      mean_recalls[f"{name}_after_gv"] = recalls

  os.makedirs(config.output_dir, exist_ok=True)
  metrics_path = os.path.join(config.output_dir, METRICS_FILENAME)
  notes = []
  if bad_global:
    notes.append(
      f"{len(bad_global)} of {num_query_images + num_index_images} global descriptor files "
      "were missing or malformed and replaced by zero vectors (--allow_missing_features)"
    )
  if report.unreadable:
    notes.append(
      f"{len(report.unreadable)} local-feature files were missing or unreadable and counted "
      "as 0 inliers (--allow_missing_features)"
    )
  metrics_file.SaveMetricsFile(
    mean_average_precision, mean_precisions, mean_recalls, PR_RANKS, metrics_path, notes=notes
  )
  print(f"Wrote {metrics_path}", file=out)
  return RetrievalResult(
    ranks_before_gv=ranks_before_gv,
    ranks_after_gv=ranks_after_gv,
    mean_average_precision=mean_average_precision,
    mean_precisions=mean_precisions,
    mean_recalls=mean_recalls,
    bad_global_descriptors=bad_global,
    unreadable_local_features=dict(report.unreadable),
    metrics_path=metrics_path,
  )


def _Rerank(
  config: RetrievalConfig,
  query_list: Sequence[str],
  index_list: Sequence[str],
  similarities: np.ndarray,
  ranks_before_gv: np.ndarray,
  protocols: dict[str, list[dict]],
  report: reranking.VerificationReport,
  out: TextIO,
) -> dict[str, np.ndarray]:
  """Geometric verification of every protocol's candidates, each pair matched once."""
  candidates = {
    name: [
      reranking.RerankingCandidates(ranks_before_gv[i], protocol_ground_truth[i]["junk"])
      for i in range(len(query_list))
    ]
    for name, protocol_ground_truth in protocols.items()
  }
  pairs: dict[str, dict[str, None]] = {}
  for name in protocols:
    for i, query_name in enumerate(query_list):
      pairs.setdefault(query_name, {}).update(
        dict.fromkeys(index_list[j] for j in candidates[name][i])
      )
  num_pairs = sum(len(v) for v in pairs.values())
  print("Starting to re-rank", file=out)
  print(
    f"Verifying {num_pairs} distinct (query, index image) pairs for {len(protocols)} protocols",
    file=out,
  )

  printed = 0

  def progress(done: int, total: int) -> None:
    nonlocal printed
    step = reranking._STATUS_CHECK_GV_ITERATIONS
    if done // step > printed // step or done == total:
      print(f"Re-ranking: i = {done} out of {total}", file=out, flush=True)
      printed = done

  options = reranking.MatchingOptions(
    local_feature_extension=LOCAL_FEATURE_EXTENSION,
    ransac_seed=0,
    descriptor_matching_threshold=config.local_descriptor_matching_threshold,
    ransac_residual_threshold=config.ransac_residual_threshold,
    use_ratio_test=config.use_ratio_test,
  )
  stats = rerank_parallel.VerificationStats()
  inliers = rerank_parallel.VerifyPairsInProcesses(
    pairs,
    rerank_parallel.FeatureSource(config.query_features_dir, LOCAL_FEATURE_EXTENSION),
    rerank_parallel.FeatureSource(config.index_features_dir, LOCAL_FEATURE_EXTENSION),
    options,
    num_workers=config.num_workers,
    report=report,
    progress=progress,
    stats=stats,
  )
  print(
    f"Verified {stats.num_pairs} pairs in {stats.seconds:.1f} s "
    f"({stats.pairs_per_second:.1f} pairs/s, {stats.num_workers} process(es))",
    file=out,
  )
  ranks_after_gv = {}
  for name in protocols:
    ranks = np.zeros_like(ranks_before_gv)
    for i, query_name in enumerate(query_list):
      counts = np.zeros([len(index_list)], dtype=np.int64)
      for j in candidates[name][i]:
        counts[j] = inliers[(query_name, index_list[j])]
      ranks[i] = reranking.SortByInliersAndScores(counts, similarities[i])
    ranks_after_gv[name] = ranks
  return ranks_after_gv


def _RankWithIndex(
  config: RetrievalConfig, query_global: np.ndarray, index_list: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Full rankings from a search index, in dataset index positions.

  Index images that are not in the dataset's list come after it (distractors, e.g.
  the +1M set); ties are broken by that position, as in the dense path.
  """
  index = search_index.GlobalIndex.load(config.index_path)
  store = None
  if feature_store.is_store(config.index_features_dir):
    store = feature_store.FeatureStore(config.index_features_dir)
    index.check_source(store.fingerprint, store.root)
  if config.dba_top_n:
    raise ValueError(
      "--dba_top_n augments the database vectors: build the index without --index_path "
      "(dense path) or from augmented descriptors"
    )
  row_of = {image_id: row for row, image_id in enumerate(index.ids)}
  missing = [name for name in index_list if name not in row_of]
  if missing:
    raise ValueError(
      f"{config.index_path}: {len(missing)} index image(s) of the dataset are not in the "
      f"index (e.g. {missing[0]}); it was built from other features"
    )
  in_dataset = set(index_list)
  extras = [image_id for image_id in index.ids if image_id not in in_dataset]
  names = list(index_list) + extras
  position_of_row = np.empty([index.num_vectors], dtype=np.int64)
  for position, name in enumerate(names):
    position_of_row[row_of[name]] = position

  def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    result = index.search(queries, k, **refine)
    return result.scores, result.rows

  refine = {}
  if index.spec.kind != "exact" and store is not None:
    refine = {"refine_vectors": search_index.StoreVectors(store), "refine_factor": 4}
  if config.query_expansion_top_n:
    if index.spec.kind == "exact":
      vectors = index.stored_vectors()
      fetch = lambda rows: vectors[rows]  # noqa: E731
    elif store is not None:
      fetch = search_index.StoreVectors(store)
    else:
      raise ValueError(
        "--query_expansion_top_n with an approximate index needs --index_features_dir "
        "to be the feature store the index was built from"
      )
    query_global = query_expansion.alpha_query_expansion(
      query_global, search, fetch, config.query_expansion_top_n, config.query_expansion_alpha
    )
  scores, rows = search(query_global, index.num_vectors)
  num_queries, total = len(query_global), len(names)
  similarities = np.full([num_queries, total], -np.inf)
  for i in range(num_queries):
    valid = rows[i] >= 0
    similarities[i, position_of_row[rows[i][valid]]] = scores[i][valid]
  # Unranked images (approximate indexes) last, by position; ties by position (KB-52).
  ranks = np.argsort(-similarities, axis=1, kind="stable").astype(np.int32)
  return similarities, ranks, names
