"""``build_index.py`` and ``search_index.py``: an index from a store (or files), top-k CSVs.

Global descriptors come from a feature store (streamed in blocks through its memory
maps: memory stays at the index plus one block) or from a folder of
``.delg_global`` files (read into memory; for small sets). Before building, the
memory the index will take is printed next to what the machine has available.
Search outputs are CSV files ``id,images,scores`` (space-separated, best first;
the first two columns are the Kaggle retrieval format); ``num_shards`` /
``shard_index`` split the queries into contiguous ranges whose files
``merge_shards`` concatenates into exactly the file of a single run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

import numpy as np

from delf import atomic_io, feature_store
from delf.progress import ProgressReporter
from delf.retrieval import index as search_index
from delf.retrieval import retrieval

GLOBAL_EXTENSION = retrieval.GLOBAL_FEATURE_EXTENSION


class GlobalSource:
  """All global descriptors of a store or a folder, with their ids and fingerprint."""

  def __init__(self, path: str):
    self.path = path
    self.store = None
    self._vectors = None
    if feature_store.is_store(path):
      self.store = feature_store.FeatureStore(path)
      if not self.store.has_global:
        raise feature_store.StoreError(f"{path}: the store holds no global descriptors")
      self.ids = self.store.ids
      self.dim = self.store.global_dim
      self.fingerprint = self.store.fingerprint
      self._dense = None
    elif os.path.isdir(path):
      self.ids = sorted(
        n[: -len(GLOBAL_EXTENSION)] for n in os.listdir(path) if n.endswith(GLOBAL_EXTENSION)
      )
      if not self.ids:
        raise ValueError(
          f"{path}: neither a feature store nor a folder of {GLOBAL_EXTENSION} files"
        )
      with open(os.devnull, "w") as quiet:
        self._dense, problems = retrieval.LoadGlobalDescriptors(path, self.ids, out=quiet)
      if problems:
        bad, why = sorted(problems.items())[0]
        raise ValueError(f"{len(problems)} unusable global descriptor file(s), e.g. {bad}: {why}")
      self.dim = self._dense.shape[1]
      self.fingerprint = search_index.ids_fingerprint(self.ids, self.dim)
    else:
      raise ValueError(f"{path}: no such feature store or folder")

  def __len__(self) -> int:
    return len(self.ids)

  def blocks(self, block_rows: int = 65536) -> Iterable[np.ndarray]:
    if self.store is not None:
      for _, block in self.store.iter_global_blocks(block_rows):
        yield block
    else:
      for start in range(0, len(self.ids), block_rows):
        yield self._dense[start : start + block_rows]

  def vectors(self) -> search_index.StoreVectors | search_index.MemoryVectors:
    """The full vectors by row, for reading rows and for refining approximate results."""
    if self._vectors is None:
      if self.store is not None:
        self._vectors = search_index.StoreVectors(self.store)
      else:
        self._vectors = search_index.MemoryVectors(self._dense)
    return self._vectors

  def rows(self, rows: np.ndarray) -> np.ndarray:
    return self.vectors()(rows)

  def sample(self, count: int) -> np.ndarray:
    """``count`` rows evenly spread over the source (deterministic)."""
    count = min(count, len(self.ids))
    return self.rows(np.unique(np.linspace(0, len(self.ids) - 1, count).astype(np.int64)))


def available_memory_bytes() -> int | None:
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def format_bytes(n: float) -> str:
  for unit in ("B", "KB", "MB", "GB", "TB"):
    if abs(n) < 1024 or unit == "TB":
      return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  return f"{n:.1f} TB"


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  features_path: str
  index_path: str
  spec: search_index.IndexSpec = dataclasses.field(default_factory=search_index.IndexSpec)
  block_rows: int = 65536


def build_index(config: BuildConfig, out: TextIO | None = None) -> search_index.GlobalIndex:
  """Builds, reports and saves an index of every global descriptor of a store or folder."""
  out = out or sys.stdout
  source = GlobalSource(config.features_path)
  n, dim = len(source), source.dim
  spec = config.spec
  estimate = spec.estimate_bytes(n, dim)
  train = spec.resolved_train_size(n)
  working = (min(config.block_rows, n) + train) * dim * 4
  available = available_memory_bytes()
  print(
    f"Building a {spec.kind} index of {n} descriptors ({dim}-D) from {config.features_path}",
    file=out,
  )
  print(
    f"Memory estimate: index {format_bytes(estimate)} ({estimate / max(n, 1):.0f} bytes/vector) "
    f"+ {format_bytes(working)} working set; available {format_bytes(available or 0)}",
    file=out,
    flush=True,
  )
  if available is not None and estimate + working > available:
    print(
      "WARNING: the estimate exceeds the available memory; consider --kind=ivfpq "
      "(tens of bytes per vector) or a machine with more memory",
      file=out,
      flush=True,
    )
  progress = ProgressReporter("Adding vectors", total=n, unit="vectors", stream=out)
  start = time.perf_counter()
  index = search_index.build_from_blocks(
    spec,
    dim,
    n,
    lambda: source.blocks(config.block_rows),
    source.sample,
    ids=source.ids,
    source_fingerprint=source.fingerprint,
    source_path=os.path.abspath(config.features_path),
    progress=lambda done: progress.update(done - progress.count),
  )
  progress.done()
  index.save(config.index_path)
  print(
    f"Wrote {config.index_path}: {index.num_vectors} vectors in {time.perf_counter() - start:.1f} s",
    file=out,
  )
  return index


def shard_range(num_items: int, num_shards: int, shard_index: int) -> range:
  """Contiguous share of ``shard_index``: concatenating the shards gives the whole list."""
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
  return range(num_items * shard_index // num_shards, num_items * (shard_index + 1) // num_shards)


def shard_path(output_path: str, num_shards: int, shard_index: int) -> str:
  if num_shards == 1:
    return output_path
  return f"{output_path}.shard-{shard_index:05d}-of-{num_shards:05d}"


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
  """A CSV written atomically (``\\n`` line ends, as the GLDv2 files)."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  atomic_io.write_text_atomic(path, buffer.getvalue())


def merge_shards(output_path: str, num_shards: int, out: TextIO | None = None) -> int:
  """Concatenates ``<output>.shard-*-of-<n>`` into ``output_path``; returns the row count.

  Raises:
    ValueError: a missing shard, different headers, or a query in two shards.
  """
  out = out or sys.stdout
  header, lines, seen = None, [], set()
  for shard_index in range(num_shards):
    path = shard_path(output_path, num_shards, shard_index)
    if not os.path.exists(path):
      raise ValueError(f"{path}: shard {shard_index} of {num_shards} is missing")
    with open(path, encoding="utf-8", newline="") as f:
      rows = list(csv.reader(f))
    if not rows:
      raise ValueError(f"{path}: empty file (no header)")
    if header is None:
      header = rows[0]
    elif rows[0] != header:
      raise ValueError(f"{path}: header {rows[0]} differs from {header}")
    for row in rows[1:]:
      if row and row[0] in seen:
        raise ValueError(f"{path}: query {row[0]} is also in an earlier shard")
      seen.add(row[0] if row else "")
      lines.append(row)
  write_csv(output_path, header, lines)
  print(f"Merged {num_shards} shards ({len(lines)} queries) into {output_path}", file=out)
  return len(lines)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  index_path: str
  queries_path: str
  output_path: str
  k: int = 100
  batch_size: int = 1024
  index_features_path: str = ""  # The store the index was built from (checks, refinement).
  refine_factor: int = 0
  num_shards: int = 1
  shard_index: int = 0
  nprobe: int = 0  # ivfpq: lists scanned per query; 0 = as the index was built.
  ef_search: int = 0  # hnsw: search breadth; 0 = as the index was built.


def with_search_parameters(
  index: search_index.GlobalIndex, nprobe: int = 0, ef_search: int = 0
) -> search_index.GlobalIndex:
  """Overrides the built-in speed/recall setting for this search (0 = keep the index's)."""
  for name, value, kind in (("nprobe", nprobe, "ivfpq"), ("ef_search", ef_search, "hnsw")):
    if not value:
      continue
    if index.spec.kind != kind:
      raise search_index.SearchIndexError(
        f"--{name} applies to {kind} indexes; this one is {index.spec.kind}"
      )
    index.spec = dataclasses.replace(index.spec, **{name: value})
  return index


def _describe_search(index: search_index.GlobalIndex, refine_factor: int) -> str:
  spec = index.spec
  if spec.kind == "exact":
    return "exact"
  setting = f"nprobe {spec.nprobe}" if spec.kind == "ivfpq" else f"ef_search {spec.ef_search}"
  refine = f"refine_factor {refine_factor}" if refine_factor else "no refinement"
  return f"{spec.kind} {setting}, {refine}"


def load_queries(path: str, ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
  """Query ids and ``[Q, D]`` descriptors from a store or folder (all, or ``ids``)."""
  source = GlobalSource(path)
  if ids is None:
    return list(source.ids), np.concatenate(list(source.blocks()) or [np.zeros([0, source.dim])])
  if source.store is not None:
    missing = [i for i in ids if i not in source.store]
    if missing:
      raise ValueError(f"{path}: {len(missing)} query id(s) not in the store (e.g. {missing[0]})")
    rows = np.array([source.store.row_of(i) for i in ids], dtype=np.int64)
  else:
    row_of = {image_id: row for row, image_id in enumerate(source.ids)}
    rows = np.array([row_of[i] for i in ids], dtype=np.int64)
  return list(ids), source.rows(rows)


def open_index(
  index_path: str, index_features_path: str = ""
) -> tuple[search_index.GlobalIndex, Callable[[np.ndarray], np.ndarray] | None]:
  """Loads an index; with the store it was built from, checks it and returns its vectors."""
  index = search_index.GlobalIndex.load(index_path)
  vectors = None
  if index_features_path:
    source = GlobalSource(index_features_path)
    index.check_source(source.fingerprint, index_features_path)
    vectors = source.vectors()
  return index, vectors


def search_to_csv(config: SearchConfig, out: TextIO | None = None) -> str:
  """Searches every query (of this shard) and writes ``id,images,scores``; returns the path."""
  out = out or sys.stdout
  index, vectors = open_index(config.index_path, config.index_features_path)
  with_search_parameters(index, config.nprobe, config.ef_search)
  query_ids, queries = load_queries(config.queries_path)
  share = shard_range(len(query_ids), config.num_shards, config.shard_index)
  query_ids, queries = [query_ids[i] for i in share], queries[share.start : share.stop]
  print(
    f"Searching {len(query_ids)} queries in {index.num_vectors} vectors "
    f"(k={config.k}, {_describe_search(index, config.refine_factor if vectors is not None else 0)})",
    file=out,
  )
  progress = ProgressReporter("Searching", total=len(query_ids), unit="queries", stream=out)
  start = time.perf_counter()
  result = index.search(
    queries,
    config.k,
    batch_size=config.batch_size,
    refine_vectors=vectors,
    refine_factor=config.refine_factor if vectors is not None else 0,
    progress=lambda done: progress.update(done - progress.count),
  )
  seconds = time.perf_counter() - start
  rows = []
  for query_id, scores, found in zip(query_ids, result.scores, result.rows):
    valid = found >= 0
    rows.append(
      [
        query_id,
        " ".join(index.ids[r] for r in found[valid]),
        " ".join(f"{s:.6f}" for s in scores[valid]),
      ]
    )
  path = shard_path(config.output_path, config.num_shards, config.shard_index)
  write_csv(path, ["id", "images", "scores"], rows)
  rate = len(query_ids) / seconds if seconds > 0 else 0.0
  print(f"Wrote {path} ({len(rows)} queries, {rate:.1f} queries/s)", file=out)
  return path
