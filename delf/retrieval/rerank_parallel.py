"""Geometric-verification re-ranking over several processes, from files or a store.

``reranking.VerifyPairs`` verifies every distinct (query, index image) pair once,
reading each feature file once, in one process. At GLDv2 scale (117,577 queries x
100 candidates = 11.8 M pairs) that is days of RANSAC on one core. Here the index
images are dealt out to ``num_workers`` processes in contiguous chunks; each
worker opens the features itself (per-image files or a ``delf.feature_store``),
reads each of its index images once, and matches it against every query that
needs it (queries are cached in the worker). A pair's inlier count depends only on
the two feature sets and the seeded RANSAC, so the result is the same for any
number of workers or chunking, and equal to ``reranking.VerifyPairs``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from delf import feature_store, matching
from delf.retrieval import reranking

_QUERY_CACHE_SIZE = 4096
_CHUNK_INDEX_IMAGES = 16


@dataclasses.dataclass(frozen=True)
class FeatureSource:
  """Where local features live: a folder of ``<id><extension>`` files, or a store."""

  path: str
  extension: str = ".delg_local"

  @property
  def is_store(self) -> bool:
    return feature_store.is_store(self.path)

  def opener(self) -> Callable[[str], matching.LocalFeatures]:
    """``id -> LocalFeatures``; raises ``FileNotFoundError``/``KeyError`` for unknown ids."""
    if self.is_store:
      store = feature_store.FeatureStore(self.path)
      if not store.has_local:
        raise feature_store.StoreError(f"{self.path}: the store holds no local features")

      def read_store(image_id: str) -> matching.LocalFeatures:
        local = store.local_features(image_id)
        return matching.LocalFeatures(
          locations=local.locations,
          descriptors=local.descriptors,
          scales=local.scales,
          attention=local.attention,
        )

      return read_store

    def read_file(image_id: str) -> matching.LocalFeatures:
      return matching.LocalFeatures.from_file(os.path.join(self.path, image_id + self.extension))

    return read_file

  def missing(self, image_ids: Iterable[str]) -> dict[str, str]:
    """``{describe(id): reason}`` for the ids whose local features are absent."""
    if self.is_store:
      with feature_store.FeatureStore(self.path) as store:
        return {self.describe(i): "not in the store" for i in image_ids if i not in store}
    return {
      self.describe(i): "file not found"
      for i in image_ids
      if not os.path.exists(os.path.join(self.path, i + self.extension))
    }

  def describe(self, image_id: str) -> str:
    if self.is_store:
      return f"{self.path}[{image_id}]"
    return os.path.join(self.path, image_id + self.extension)


def _load(
  read: Callable[[str], matching.LocalFeatures],
  source: FeatureSource,
  image_id: str,
  unreadable: dict[str, str],
) -> matching.LocalFeatures | None:
  try:
    features = read(image_id)
  except (FileNotFoundError, KeyError):
    unreadable[source.describe(image_id)] = (
      "file not found" if not source.is_store else "not in the store"
    )
    return None
  except feature_store.StoreError:
    raise
  except Exception as e:  # Corrupt file: 0 inliers, reported (KB-41).
    unreadable[source.describe(image_id)] = f"cannot parse ({type(e).__name__}: {e})"
    return None
  features.descriptors = features.descriptors.astype(np.float32)
  return features


class _Verifier:
  """State of one worker: the opened sources, the options and a query cache."""

  def __init__(self, query_source: FeatureSource, index_source: FeatureSource, options):
    self.query_source, self.index_source = query_source, index_source
    self.read_query = query_source.opener()
    self.read_index = index_source.opener()
    self.options = options
    self.queries: collections.OrderedDict[str, matching.LocalFeatures | None] = (
      collections.OrderedDict()
    )

  def query(self, name: str, unreadable: dict[str, str]) -> matching.LocalFeatures | None:
    if name in self.queries:
      self.queries.move_to_end(name)
      return self.queries[name]
    features = _load(self.read_query, self.query_source, name, unreadable)
    self.queries[name] = features
    if len(self.queries) > _QUERY_CACHE_SIZE:
      self.queries.popitem(last=False)
    return features

  def verify(self, chunk: list[tuple[str, list[str]]]):
    """Inliers of every (query, index) pair of a chunk of index images."""
    unreadable: dict[str, str] = {}
    results = []
    options = self.options
    for index_name, query_names in chunk:
      index = _load(self.read_index, self.index_source, index_name, unreadable)
      for query_name in query_names:
        query = self.query(query_name, unreadable)
        score = 0
        if query is not None and index is not None:
          try:
            score, _ = reranking._Match(
              query, index, options.ransac_seed, options.descriptor_matching_threshold,
              options.ransac_residual_threshold, options.use_ratio_test,
            )  # fmt: skip
          except ValueError as e:
            raise ValueError(f"query {query_name} vs index image {index_name}: {e}") from None
        results.append((query_name, index_name, score))
    return results, unreadable


_WORKER: _Verifier | None = None


def _init_worker(query_source, index_source, options) -> None:
  global _WORKER
  _WORKER = _Verifier(query_source, index_source, options)


@contextlib.contextmanager
def _single_threaded_children():
  """Workers start with one BLAS/OpenMP thread each: the processes are the parallelism
  (spawned children read these variables when NumPy loads, before any initializer)."""
  names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
  saved = {name: os.environ.get(name) for name in names}
  os.environ.update(dict.fromkeys(names, "1"))
  try:
    yield
  finally:
    for name, value in saved.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value


def _verify_chunk(chunk):
  assert _WORKER is not None
  return _WORKER.verify(chunk)


@dataclasses.dataclass
class VerificationStats:
  """Pairs verified, seconds and workers of one call (for the pairs/s line)."""

  num_pairs: int = 0
  seconds: float = 0.0
  num_workers: int = 1

  @property
  def pairs_per_second(self) -> float:
    return self.num_pairs / self.seconds if self.seconds > 0 else 0.0


def default_num_workers() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def VerifyPairsInProcesses(
  pairs: Mapping[str, Iterable[str]],
  query_source: FeatureSource,
  index_source: FeatureSource,
  options: reranking.MatchingOptions,
  *,
  num_workers: int = 1,
  report: reranking.VerificationReport | None = None,
  progress: Callable[[int, int], None] | None = None,
  stats: VerificationStats | None = None,
) -> dict[tuple[str, str], int]:
  """Inlier counts of every requested (query, index image) pair, each matched once.

  Args:
    pairs: query id -> index ids to verify against it.
    query_source, index_source: where the local features are.
    options: matching settings (``local_feature_extension`` is ignored: sources say it).
    num_workers: processes (1 = in this process). Results do not depend on it.
    report: collects missing/unreadable features (0 inliers, KB-41).
    progress: ``progress(done, total)`` in index images, after each chunk.
    stats: filled with the pair count, seconds and workers.

  Raises:
    ValueError: different descriptor dimensions for a query and an index image.
    feature_store.StoreError: an unusable store.
  """
  report = report if report is not None else reranking.VerificationReport()
  by_index: dict[str, dict[str, None]] = {}
  for query_name, index_names in pairs.items():
    for index_name in index_names:
      by_index.setdefault(index_name, {})[query_name] = None
  items = [(name, list(queries)) for name, queries in by_index.items()]
  num_pairs = sum(len(q) for _, q in items)
  # Chunks small enough to keep every worker busy to the end, large enough to amortise IPC.
  chunk_size = max(1, min(_CHUNK_INDEX_IMAGES, -(-len(items) // (4 * max(1, num_workers)))))
  chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
  inliers: dict[tuple[str, str], int] = {}
  start = time.perf_counter()
  done = 0

  def collect(result) -> None:
    nonlocal done
    chunk_results, unreadable = result
    for query_name, index_name, score in chunk_results:
      inliers[(query_name, index_name)] = score
    report.unreadable.update(unreadable)

  num_workers = max(1, min(num_workers, len(chunks)))
  if num_workers == 1:
    verifier = _Verifier(query_source, index_source, options)
    for chunk in chunks:
      collect(verifier.verify(chunk))
      done += len(chunk)
      if progress:
        progress(done, len(items))
  else:
    # spawn: the caller may have imported TensorFlow (threads do not survive fork).
    context = multiprocessing.get_context("spawn")
    with _single_threaded_children():
      pool = context.Pool(
        num_workers, initializer=_init_worker, initargs=(query_source, index_source, options)
      )
    with pool:
      for chunk, result in zip(chunks, pool.imap(_verify_chunk, chunks)):
        collect(result)
        done += len(chunk)
        if progress:
          progress(done, len(items))
  if stats is not None:
    stats.num_pairs = num_pairs
    stats.seconds = time.perf_counter() - start
    stats.num_workers = num_workers
  return inliers
