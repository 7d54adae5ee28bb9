"""A global-descriptor search index over faiss: exact inner product, IVF-PQ (+OPQ), HNSW.

``perform_retrieval`` ranks by the dot product of unit-norm global descriptors
(cosine similarity). At GLDv2 scale (761,757 index images, 117,577 queries) a dense
NumPy product one query at a time does not serve; this module builds a faiss index
once and searches it in batches.

* ``exact`` (default): ``IndexFlatIP``. faiss's float32 products round differently
  from NumPy's (and from each other for other batch shapes), so a plain faiss
  search could order near-ties differently from ``perform_retrieval``'s ranking.
  The exact index therefore uses faiss only to find candidates: every item whose
  float32 score is within a proven rounding bound of the k-th best, then orders
  them by :func:`inner_products` (float64, the same function ``perform_retrieval``
  ranks with) and ties by ascending row. Result: the same ranking as the NumPy
  path, ties included, at faiss's speed.
* ``ivfpq``: an inverted file of ``nlist`` lists over product-quantised codes of
  ``pq_bytes`` bytes (8 bits per sub-quantiser), with an OPQ rotation learned
  first (``opq``, on by default) that also reduces the vectors to ``4 * pq_bytes``
  dimensions. ``nprobe`` lists are scanned per query. Memory: ``pq_bytes`` + 8
  (the id) bytes per vector.
* ``hnsw``: a graph index (``hnsw_m`` links per node) over the vectors, optionally
  projected to ``reduced_dim`` dimensions first (an uncentred PCA, so inner
  products are preserved as far as the dropped directions allow); ``ef_search``
  trades speed for recall.

Approximate indexes can re-score their best ``refine_factor * k`` candidates
exactly against the full vectors (e.g. the feature store's memory map), which
recovers most of the recall lost to compression at little cost.

The index keeps the ids of its rows and the fingerprint of the store it was built
from, so it refuses queries of another dimension and a store it was not built from,
each with a one-line ``SearchIndexError``. faiss's GPU build is used when present
(``faiss.get_num_gpus() > 0``) for search; everything works on the CPU build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence

import numpy as np

KINDS = ("exact", "ivfpq", "hnsw")
INDEX_FILE = "index.faiss"
META_FILE = "index.json"
IDS_FILE = "ids.txt"
PROJECTION_FILE = "projection.npy"
FORMAT_VERSION = 1
_UNIT_ROUNDOFF = 2.0**-24
# Extra candidates asked from faiss beyond k for the exact re-ordering (doubled as needed).
_EXACT_MARGIN = 32


class SearchIndexError(ValueError):
  """An unusable index or mismatched input (one-line message)."""


def _faiss():
  # OpenMP threads that spin while waiting fight NumPy's BLAS threads (and other jobs)
  # for the cores: 10x slower training on a busy 2-core machine. Passive waiting costs
  # little on an idle one; set OMP_WAIT_POLICY yourself to override.
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  # faiss's loader logs every SIMD variant it could not load, at INFO level.
  logging.getLogger("faiss.loader").setLevel(logging.WARNING)
  import faiss  # Imported lazily: `import delf` must stay light.

  return faiss


def inner_products(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
  """``[Q, N]`` float64 dot products, independent of how rows are batched.

  Each product of two float32 values is exact in float64 and every row is summed
  by the same pairwise reduction whatever the batch, so a given (query, vector)
  pair always gets the same bits: the property both ``perform_retrieval``'s
  ranking and the exact index rely on for identical orders (BLAS GEMM results
  change with the matrix shapes).
  """
  queries = np.asarray(queries, dtype=np.float64)
  vectors = np.asarray(vectors, dtype=np.float64)
  squeeze = queries.ndim == 1
  queries = np.atleast_2d(queries)
  out = np.empty([queries.shape[0], vectors.shape[0]], dtype=np.float64)
  # Bound the [rows, D] temporary to ~64 MB.
  rows = max(1, (8 << 20) // max(1, vectors.shape[1]))
  for i, query in enumerate(queries):
    for start in range(0, vectors.shape[0], rows):
      block = vectors[start : start + rows]
      out[i, start : start + len(block)] = np.sum(block * query, axis=1)
  return out[0] if squeeze else out


def rank_rows(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """Order of ``(score descending, row ascending)`` along the last axis."""
  return np.lexsort((rows, -scores), axis=-1)


def ids_fingerprint(ids: Sequence[str], dim: int) -> str:
  """What a store's ``fingerprint`` is made of, for sources without a store."""
  import hashlib

  digest = hashlib.sha256()
  digest.update(f"{dim}:{len(ids)}\n".encode())
  for image_id in ids:
    digest.update(image_id.encode("utf-8") + b"\n")
  return digest.hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class IndexSpec:
  """What to build. Only the fields of the chosen ``kind`` matter."""

  kind: str = "exact"
  nlist: int = 0  # IVF lists; 0 = about 4 * sqrt(N), a power of two.
  pq_bytes: int = 64  # Sub-quantisers per PQ code.
  pq_bits: int = 8  # Bits per sub-quantiser (8: one byte each).
  opq: bool = True
  nprobe: int = 32
  hnsw_m: int = 32
  ef_construction: int = 64
  ef_search: int = 128
  # Uncentred PCA projection before the index (0 = none; IVF-PQ with OPQ: 4 * pq_bytes).
  reduced_dim: int = 0
  train_size: int = 0  # Training vectors; 0 = a default per kind.

  def __post_init__(self):
    if self.kind not in KINDS:
      raise SearchIndexError(f"index kind must be one of {KINDS}, got {self.kind!r}")
    for name in ("pq_bytes", "pq_bits", "nprobe", "hnsw_m", "ef_construction", "ef_search"):
      if getattr(self, name) < 1:
        raise SearchIndexError(f"{name} must be positive, got {getattr(self, name)}")

  def inner_dim(self, dim: int) -> int:
    """Dimension inside the faiss index (after the projection)."""
    if self.reduced_dim:
      return min(self.reduced_dim, dim)
    if self.kind == "ivfpq" and self.opq:
      return min(dim, 4 * self.pq_bytes)
    return dim

  def code_bytes(self) -> int:
    return (self.pq_bytes * self.pq_bits + 7) // 8

  def resolved_nlist(self, num_vectors: int) -> int:
    if self.nlist:
      return self.nlist
    target = 4 * math.sqrt(max(num_vectors, 1))
    return int(max(1, min(65536, 2 ** round(math.log2(max(target, 1))))))

  def resolved_train_size(self, num_vectors: int) -> int:
    if self.train_size:
      return min(self.train_size, num_vectors)
    if self.kind == "ivfpq":
      wanted = max(40 * self.resolved_nlist(num_vectors), 40 * 2**self.pq_bits, 20_000)
    elif self.reduced_dim:
      wanted = 50_000
    else:
      wanted = 0
    return min(wanted, num_vectors)

  def estimate_bytes(self, num_vectors: int, dim: int) -> int:
    """Memory of the built index (what ``build_index.py`` prints before it starts)."""
    n = num_vectors
    if self.kind == "exact":
      return n * dim * 4
    inner = self.inner_dim(dim)
    if self.kind == "ivfpq":
      return n * (self.code_bytes() + 8) + self.resolved_nlist(n) * inner * 4 + inner * dim * 4
    # Level 0 keeps 2*M neighbours (int32), upper levels ~M/(M-1) more; plus levels.
    return int(n * (inner * 4 + 2 * self.hnsw_m * 4 * 1.07 + 8)) + inner * dim * 4

  def faiss_description(self, dim: int, num_vectors: int) -> str:
    """The faiss ``index_factory`` string (applied after the projection, if any)."""
    if self.kind == "exact":
      return "Flat"
    if self.kind == "ivfpq":
      nlist = self.resolved_nlist(num_vectors)
      opq = f"OPQ{self.pq_bytes}," if self.opq else ""
      return f"{opq}IVF{nlist},PQ{self.pq_bytes}x{self.pq_bits}"
    return f"HNSW{self.hnsw_m},Flat"


@dataclasses.dataclass
class SearchResult:
  """Best first: ``scores [Q, k]`` and store ``rows [Q, k]`` (-1 where fewer than k exist)."""

  scores: np.ndarray
  rows: np.ndarray


class GlobalIndex:
  """A faiss index plus the ids of its rows and where they came from."""

  def __init__(
    self,
    spec: IndexSpec,
    dim: int,
    *,
    ids: Sequence[str] = (),
    source_fingerprint: str = "",
    source_path: str = "",
    faiss_index=None,
    projection: np.ndarray | None = None,
    max_norm: float = 0.0,
    num_vectors_hint: int = 0,
  ):
    self.spec = spec
    self.dim = int(dim)
    self.ids = list(ids)
    self.source_fingerprint = source_fingerprint
    self.source_path = source_path
    self.projection = projection
    self.max_norm = float(max_norm)
    self.path = ""
    self._gpu_index = None
    if faiss_index is None:
      faiss_index = self._new_faiss_index(max(num_vectors_hint, len(self.ids)))
    self.faiss_index = faiss_index

  # ------------------------------------------------------------------ building

  def _new_faiss_index(self, num_vectors: int):
    faiss = _faiss()
    metric = faiss.METRIC_INNER_PRODUCT
    inner = self.spec.inner_dim(self.dim)
    if self.spec.kind == "hnsw":
      index = faiss.IndexHNSWFlat(inner, self.spec.hnsw_m, metric)
      index.hnsw.efConstruction = self.spec.ef_construction
      index.hnsw.efSearch = self.spec.ef_search
      return index
    index = faiss.index_factory(inner, self.spec.faiss_description(inner, num_vectors), metric)
    if self.spec.kind == "ivfpq":
      # Polysemous code re-ordering only helps Hamming-filtered search (not used) and
      # costs 10x the PQ training itself.
      faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
      if self.spec.opq:
        # faiss's defaults (50 iterations on up to 65,536 vectors) cost many minutes
        # on 2 cores for little gain over 10 iterations on 20,000.
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        opq.niter = 10
        opq.max_train_points = 20_000
    return index

  @property
  def _projects(self) -> bool:
    return self.spec.inner_dim(self.dim) != self.dim

  @property
  def num_vectors(self) -> int:
    return int(self.faiss_index.ntotal)

  @property
  def needs_training(self) -> bool:
    return not self.faiss_index.is_trained or (self._projects and self.projection is None)

  def _check_dim(self, vectors: np.ndarray, what: str) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != self.dim:
      shape = list(vectors.shape)
      raise SearchIndexError(
        f"{what} have dimension {shape[-1] if shape else 0} (shape {shape}), the index "
        f"{self.path or 'being built'} has {self.dim}"
      )
    return vectors

  def train(self, sample: np.ndarray) -> None:
    """Learns the projection / quantisers from a sample of the vectors."""
    sample = self._check_dim(sample, "training vectors")
    if self._projects and self.projection is None:
      # Uncentred PCA: the top eigenvectors of the second-moment matrix. Unlike a
      # centred PCA it keeps inner products (not just distances) as far as it can.
      sample64 = sample.astype(np.float64)
      eigenvalues, eigenvectors = np.linalg.eigh(sample64.T @ sample64)
      order = np.argsort(eigenvalues)[::-1][: self.spec.inner_dim(self.dim)]
      self.projection = np.ascontiguousarray(eigenvectors[:, order], dtype=np.float32)
    if not self.faiss_index.is_trained:
      self.faiss_index.train(self._project(sample))

  def _project(self, vectors: np.ndarray) -> np.ndarray:
    if self.projection is None:
      return vectors
    return np.ascontiguousarray(vectors @ self.projection)

  def add(self, vectors: np.ndarray) -> None:
    """Appends rows (their ids must be appended to ``ids`` by the caller, in order)."""
    vectors = self._check_dim(vectors, "vectors")
    if self.needs_training:
      raise SearchIndexError(f"the {self.spec.kind} index must be trained before adding vectors")
    if len(vectors):
      self.max_norm = max(self.max_norm, float(np.linalg.norm(vectors, axis=1).max()))
    self.faiss_index.add(self._project(vectors))
    self._gpu_index = None

  # ------------------------------------------------------------------ searching

  def _searcher(self):
    """The GPU copy of the index when faiss has GPUs (exact and IVF), else the index."""
    if self._gpu_index is None:
      faiss = _faiss()
      self._gpu_index = self.faiss_index
      if self.spec.kind != "hnsw" and getattr(faiss, "get_num_gpus", lambda: 0)() > 0:
        with contextlib.suppress(Exception):  # Unsupported on GPU: stay on the CPU.
          self._gpu_index = faiss.index_cpu_to_all_gpus(self.faiss_index)
    return self._gpu_index

  def _set_search_parameters(self) -> None:
    faiss = _faiss()
    if self.spec.kind == "ivfpq":
      faiss.extract_index_ivf(self.faiss_index).nprobe = self.spec.nprobe
      if self._gpu_index is not None and self._gpu_index is not self.faiss_index:
        with contextlib.suppress(Exception):
          faiss.GpuParameterSpace().set_index_parameter(self._gpu_index, "nprobe", self.spec.nprobe)
    elif self.spec.kind == "hnsw":
      self.faiss_index.hnsw.efSearch = self.spec.ef_search

  def stored_vectors(self) -> np.ndarray:
    """``[N, D]`` float32 view of an exact index's vectors (no copy)."""
    if self.spec.kind != "exact":
      raise SearchIndexError("only the exact index keeps the full vectors")
    faiss = _faiss()
    n = self.num_vectors
    if n == 0:
      return np.zeros([0, self.dim], np.float32)
    return faiss.rev_swig_ptr(self.faiss_index.get_xb(), n * self.dim).reshape(n, self.dim)

  def search(
    self,
    queries: np.ndarray,
    k: int,
    *,
    batch_size: int = 1024,
    refine_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
    refine_factor: int = 0,
    progress: Callable[[int], None] | None = None,
  ) -> SearchResult:
    """Top-k rows by inner product for every query, best first (ties: lower row first).

    Args:
      queries: ``[Q, D]`` float descriptors.
      k: results per query (capped at the number of vectors; missing ones are -1).
      batch_size: queries per faiss call.
      refine_vectors: ``rows -> [len(rows), D]`` full vectors, for approximate
        indexes with ``refine_factor`` (e.g. ``StoreVectors(store)``).
      refine_factor: approximate indexes fetch ``refine_factor * k`` candidates and
        re-score them exactly with ``refine_vectors``; 0 = faiss's scores as they are.
      progress: called with the number of queries done after each batch.
    """
    queries = self._check_dim(np.atleast_2d(queries), "query descriptors")
    n = self.num_vectors
    k = int(k)
    if k < 1:
      raise SearchIndexError(f"k must be positive, got {k}")
    scores = np.full([len(queries), k], -np.inf, dtype=np.float64)
    rows = np.full([len(queries), k], -1, dtype=np.int64)
    if n == 0:
      return SearchResult(scores, rows)
    kk = min(k, n)
    self._searcher()
    self._set_search_parameters()
    for start in range(0, len(queries), batch_size):
      batch = queries[start : start + batch_size]
      if self.spec.kind == "exact":
        batch_scores, batch_rows = self._search_exact(batch, kk)
      elif refine_factor and refine_vectors is not None:
        _, fetched_rows = self._faiss_search(batch, min(n, kk * refine_factor))
        batch_scores, batch_rows = _refine(batch, fetched_rows, kk, refine_vectors)
      else:
        batch_scores, batch_rows = self._faiss_search(batch, kk)
        order = rank_rows(batch_scores, np.where(batch_rows < 0, n, batch_rows))
        batch_scores = np.take_along_axis(batch_scores, order, 1)
        batch_rows = np.take_along_axis(batch_rows, order, 1)
      scores[start : start + len(batch), :kk] = batch_scores
      rows[start : start + len(batch), :kk] = batch_rows
      if progress:
        progress(start + len(batch))
    return SearchResult(scores, rows)

  def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    distances, labels = self._searcher().search(self._project(queries), k)
    return distances.astype(np.float64), labels

  def _search_exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss candidates within the rounding bound of the k-th score, ordered exactly."""
    n, dim = self.num_vectors, self.dim
    vectors = self.stored_vectors()
    # |float32 dot - exact dot| <= gamma_(D+2) * |q| * |x| for any summation order.
    gamma = (dim + 2) * _UNIT_ROUNDOFF / (1 - (dim + 2) * _UNIT_ROUNDOFF)
    bounds = 2.0 * gamma * np.linalg.norm(queries, axis=1) * self.max_norm + 1e-30
    out_scores = np.empty([len(queries), k])
    out_rows = np.empty([len(queries), k], dtype=np.int64)
    pending = np.arange(len(queries))
    fetch = min(n, k + _EXACT_MARGIN)
    while len(pending):
      approx, labels = self._faiss_search(queries[pending], fetch)
      threshold = approx[:, k - 1] - bounds[pending]
      complete = (fetch == n) | (approx[:, -1] < threshold)
      for j in np.flatnonzero(complete):
        query = pending[j]
        candidates = labels[j][(approx[j] >= threshold[j]) & (labels[j] >= 0)]
        exact = inner_products(queries[query], vectors[np.sort(candidates)])
        candidates = np.sort(candidates)
        order = rank_rows(exact, candidates)[:k]
        out_scores[query], out_rows[query] = exact[order], candidates[order]
      pending = pending[~complete]
      fetch = min(n, fetch * 2)
    return out_scores, out_rows

  # ------------------------------------------------------------------ checks

  def check_source(self, fingerprint: str, source: str) -> None:
    """Refuses a store (or file list) other than the one the index was built from."""
    if self.source_fingerprint and fingerprint != self.source_fingerprint:
      raise SearchIndexError(
        f"{self.path or 'the index'} was built from another store ({self.source_path or '?'}, "
        f"{len(self.ids)} images, fingerprint {self.source_fingerprint}) than {source} "
        f"(fingerprint {fingerprint}); rebuild it with scripts/build_index.py"
      )

  def bytes_per_vector(self) -> float:
    """Serialised size per vector (codes, ids, graph links and quantisers)."""
    faiss = _faiss()
    return len(faiss.serialize_index(self.faiss_index)) / max(1, self.num_vectors)

  # ------------------------------------------------------------------ files

  def save(self, path: str | os.PathLike) -> None:
    """Writes ``path/`` (index.faiss, index.json, ids.txt) atomically."""
    faiss = _faiss()
    path = os.fspath(path).rstrip("/")
    if any("\n" in i or "\r" in i for i in self.ids):
      raise SearchIndexError("image ids must not contain line breaks")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
      faiss.write_index(self.faiss_index, os.path.join(tmp, INDEX_FILE))
      with open(os.path.join(tmp, IDS_FILE), "w", encoding="utf-8") as f:
        f.writelines(i + "\n" for i in self.ids)
      if self.projection is not None:
        np.save(os.path.join(tmp, PROJECTION_FILE), self.projection)
      meta = {
        "format_version": FORMAT_VERSION,
        "spec": dataclasses.asdict(self.spec),
        "dim": self.dim,
        "num_vectors": self.num_vectors,
        "max_norm": self.max_norm,
        "source_fingerprint": self.source_fingerprint,
        "source_path": self.source_path,
      }
      with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
      os.chmod(tmp, 0o777 & ~_umask())
      old = None
      if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
        os.replace(path, os.path.join(old, "index"))
      os.replace(tmp, path)
      if old:
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    self.path = path

  @classmethod
  def load(cls, path: str | os.PathLike) -> GlobalIndex:
    faiss = _faiss()
    path = os.fspath(path).rstrip("/")
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isfile(meta_path):
      raise SearchIndexError(f"{path}: not an index directory (no {META_FILE})")
    try:
      with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
      spec = IndexSpec(**meta["spec"])
      with open(os.path.join(path, IDS_FILE), encoding="utf-8") as f:
        ids = [line.rstrip("\n") for line in f]
      faiss_index = faiss.read_index(os.path.join(path, INDEX_FILE))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
      raise SearchIndexError(f"{path}: unreadable index ({type(e).__name__}: {e})") from None
    projection = None
    if os.path.exists(os.path.join(path, PROJECTION_FILE)):
      projection = np.load(os.path.join(path, PROJECTION_FILE))
    if faiss_index.ntotal != len(ids) or faiss_index.ntotal != meta["num_vectors"]:
      raise SearchIndexError(
        f"{path}: {faiss_index.ntotal} vectors but {len(ids)} ids (files from different builds)"
      )
    index = cls(
      spec,
      meta["dim"],
      ids=ids,
      source_fingerprint=meta.get("source_fingerprint", ""),
      source_path=meta.get("source_path", ""),
      faiss_index=faiss_index,
      projection=projection,
      max_norm=meta.get("max_norm", 0.0),
    )
    index.path = path
    return index


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _refine(
  queries: np.ndarray,
  candidate_rows: np.ndarray,
  k: int,
  refine_vectors: Callable[[np.ndarray], np.ndarray],
  queries_per_gather: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
  """Re-scoring of approximate candidates with the full vectors.

  Sources with an ``inner_products(queries, rows)`` method (``MemoryVectors``,
  ``StoreVectors``) score in place, on all cores; plain ``rows -> vectors`` callables
  are gathered a few queries at a time (`_gathered_inner_products`).
  """
  scorer = getattr(refine_vectors, "inner_products", None)
  if scorer is None:
    scores = _gathered_inner_products(refine_vectors, queries, candidate_rows, queries_per_gather)
  else:
    scores = scorer(queries, candidate_rows)
  valid = candidate_rows >= 0
  scores = np.where(valid, scores.astype(np.float64), -np.inf)
  order = rank_rows(scores, np.where(valid, candidate_rows, np.iinfo(np.int64).max))[:, :k]
  taken = np.take_along_axis(valid, order, 1)
  out_scores = np.full([len(queries), k], -np.inf)
  out_rows = np.full([len(queries), k], -1, dtype=np.int64)
  kept = order.shape[1]
  out_scores[:, :kept] = np.where(taken, np.take_along_axis(scores, order, 1), -np.inf)
  out_rows[:, :kept] = np.where(taken, np.take_along_axis(candidate_rows, order, 1), -1)
  return out_scores, out_rows


def _gathered_inner_products(
  vectors_of: Callable[[np.ndarray], np.ndarray],
  queries: np.ndarray,
  rows: np.ndarray,
  queries_per_gather: int = 8,
) -> np.ndarray:
  """``[Q, C]`` float32 scores of ``queries[i]`` against ``vectors_of(rows[i, j])``.

  -inf where ``rows < 0``. The rows of a few queries are gathered at a time: one gather
  of a whole batch's candidates (1.5 GB for 1,024 queries x 200 rows x 2048-D) cost more
  in fresh pages than the scoring itself. float32 einsum: no bit-exact order is needed,
  and unlike a BLAS gemv it starts no threads (which spin on a busy machine).
  """
  queries = np.asarray(queries, dtype=np.float32)
  out = np.full(rows.shape, -np.inf, dtype=np.float32)
  for start in range(0, len(rows), queries_per_gather):
    query_at, column = np.nonzero(rows[start : start + queries_per_gather] >= 0)
    query_at += start
    vectors = np.asarray(vectors_of(rows[query_at, column]), dtype=np.float32)
    out[query_at, column] = np.einsum("cd,cd->c", vectors, queries[query_at])
  return out


def _inner_products_by_row(queries: np.ndarray, matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """``[Q, C]`` float32 ``queries[i] . matrix[rows[i, j]]``; -inf where ``rows < 0``.

  faiss reads the rows where they lie (RAM or a memory map) on all cores: no gathered
  copy. ``matrix`` must be C-contiguous float32 and every row below ``len(matrix)``.
  """
  faiss = _faiss()
  queries = np.ascontiguousarray(queries, dtype=np.float32)
  rows = np.ascontiguousarray(rows, dtype=np.int64)
  if rows.size and rows.max() >= len(matrix):
    raise SearchIndexError(f"row {rows.max()} beyond the {len(matrix)} refinement vectors")
  out = np.empty(rows.shape, dtype=np.float32)
  if rows.size:
    faiss.fvec_inner_products_by_idx(
      faiss.swig_ptr(out),
      faiss.swig_ptr(queries),
      faiss.swig_ptr(matrix),
      faiss.swig_ptr(rows),
      queries.shape[1],
      rows.shape[0],
      rows.shape[1],
    )
  out[rows < 0] = -np.inf
  return out


class MemoryVectors:
  """``rows -> vectors`` over an in-memory ``[N, D]`` matrix (for ``refine_vectors``)."""

  def __init__(self, matrix: np.ndarray):
    self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)

  def __call__(self, rows: np.ndarray) -> np.ndarray:
    return self.matrix[np.asarray(rows, dtype=np.int64)]

  def inner_products(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return _inner_products_by_row(queries, self.matrix, rows)


class StoreVectors:
  """``rows -> vectors`` from a feature store's memory maps (for ``refine_vectors``)."""

  def __init__(self, store):
    self._maps = store.global_memmaps()
    self._firsts = np.array([part.first_row for part in store.parts], dtype=np.int64)
    # float16 stores are widened on the way: gathered, not scored in place.
    self._in_place = all(m.dtype == np.float32 and m.flags.c_contiguous for m in self._maps)

  def _parts_of(self, rows: np.ndarray) -> np.ndarray:
    return np.searchsorted(self._firsts, rows, side="right") - 1

  def __call__(self, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty([len(rows), self._maps[0].shape[1] if self._maps else 0], np.float32)
    parts = self._parts_of(rows)
    for part in np.unique(parts):
      mask = parts == part
      local = rows[mask] - self._firsts[part]
      order = np.argsort(local)
      gathered = np.asarray(self._maps[part][local[order]], np.float32)
      out[np.flatnonzero(mask)[order]] = gathered
    return out

  def inner_products(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``[Q, C]`` scores of ``queries[i]`` against row ``rows[i, j]``; -inf where < 0.

    One faiss call per part file holding candidates, over only the queries with
    candidates there (a GLDv2 store has ~1,000 parts of 1,000 images).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not self._in_place:
      return _gathered_inner_products(self, queries, rows)
    out = np.full(rows.shape, -np.inf, dtype=np.float32)
    query_at, column = np.nonzero(rows >= 0)
    wanted = rows[query_at, column]
    parts = self._parts_of(wanted)
    order = np.lexsort((query_at, parts))  # by part, then by query
    query_at, column, wanted, parts = query_at[order], column[order], wanted[order], parts[order]
    bounds = np.flatnonzero(np.diff(parts)) + 1
    for group in np.split(np.arange(len(parts)), bounds):
      if not len(group):
        continue
      part = parts[group[0]]
      group_queries, first, counts = np.unique(
        query_at[group], return_index=True, return_counts=True
      )
      # [queries with candidates in this part, most candidates of one], padded with -1.
      line = np.repeat(np.arange(len(group_queries)), counts)
      slot = np.arange(len(group)) - np.repeat(first, counts)
      local = np.full([len(group_queries), counts.max()], -1, dtype=np.int64)
      local[line, slot] = wanted[group] - self._firsts[part]
      scores = _inner_products_by_row(queries[group_queries], self._maps[part], local)
      out[query_at[group], column[group]] = scores[line, slot]
    return out


def build_from_blocks(
  spec: IndexSpec,
  dim: int,
  num_vectors: int,
  blocks: Callable[[], Iterable[np.ndarray]],
  sample: Callable[[int], np.ndarray],
  *,
  ids: Sequence[str],
  source_fingerprint: str = "",
  source_path: str = "",
  progress: Callable[[int], None] | None = None,
) -> GlobalIndex:
  """Trains (on ``sample(n)``) and fills an index from streamed ``[b, D]`` blocks."""
  if len(ids) != num_vectors:
    raise SearchIndexError(f"{len(ids)} ids for {num_vectors} vectors")
  index = GlobalIndex(
    spec,
    dim,
    source_fingerprint=source_fingerprint,
    source_path=source_path,
    num_vectors_hint=num_vectors,
  )
  if index.needs_training:
    train_size = spec.resolved_train_size(num_vectors)
    if spec.kind == "ivfpq" and num_vectors < 256:
      raise SearchIndexError(
        f"IVF-PQ needs at least 256 vectors to train its 8-bit quantisers, got {num_vectors}"
      )
    index.train(sample(train_size))
  done = 0
  for block in blocks():
    index.add(block)
    done += len(block)
    if progress:
      progress(done)
  if done != num_vectors:
    raise SearchIndexError(f"expected {num_vectors} vectors, got {done}")
  index.ids = list(ids)
  return index
