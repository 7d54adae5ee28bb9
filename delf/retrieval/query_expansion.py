"""Cheap global-descriptor refinements: α-query expansion and database-side augmentation.

Both come from Radenović et al., "Fine-tuning CNN image retrieval with no human
annotation" (TPAMI 2018), and are what retrieval users expect next to a global
descriptor. Both are off by default (the reference has neither).

* α-QE: a query is replaced by the normalised weighted sum of itself and its top
  ``n`` results, each weighted by ``max(similarity, 0) ** alpha`` (the query itself
  has weight 1), then searched again.
* DBA: every database vector is replaced in the same way by the weighted sum of its
  own top ``n`` neighbours in the database (itself included, similarity 1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _normalize(x: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def weighted_sum(
  vectors: np.ndarray,
  neighbor_scores: np.ndarray,
  neighbor_vectors: Callable[[np.ndarray], np.ndarray],
  neighbor_rows: np.ndarray,
  alpha: float,
  include_self: bool,
) -> np.ndarray:
  """``normalize(self + sum_j max(s_j, 0)^alpha x_j)`` per row (self omitted if not included)."""
  vectors = np.asarray(vectors, dtype=np.float32)
  out = vectors.astype(np.float64) if include_self else np.zeros(vectors.shape)
  weights = np.maximum(np.asarray(neighbor_scores, np.float64), 0.0) ** alpha
  weights[neighbor_rows < 0] = 0.0
  for i in range(len(vectors)):
    rows = neighbor_rows[i]
    valid = rows >= 0
    if valid.any():
      out[i] += weights[i, valid] @ np.asarray(neighbor_vectors(rows[valid]), np.float64)
  return _normalize(out)


def alpha_query_expansion(
  queries: np.ndarray,
  search: SearchFn,
  vectors: Callable[[np.ndarray], np.ndarray],
  top_n: int,
  alpha: float = 3.0,
) -> np.ndarray:
  """Expanded queries: ``normalize(q + sum_{i<n} max(s_i, 0)^alpha x_i)``."""
  if top_n <= 0:
    return np.asarray(queries, np.float32)
  scores, rows = search(queries, top_n)
  return weighted_sum(queries, scores, vectors, rows, alpha, include_self=True)


def database_augmentation(
  database: np.ndarray,
  search: SearchFn,
  top_n: int,
  alpha: float = 3.0,
  block_rows: int = 4096,
) -> np.ndarray:
  """Augmented database vectors (each vector's own top ``n`` neighbours, itself included).

  ``search(vectors, k)`` must search the original database; the vectors themselves
  are returned by their nearest neighbour, i.e. they count once with weight ``1``.
  """
  database = np.asarray(database, np.float32)
  if top_n <= 0:
    return database
  augmented = np.empty_like(database)
  for start in range(0, len(database), block_rows):
    block = database[start : start + block_rows]
    scores, rows = search(block, top_n)
    augmented[start : start + len(block)] = weighted_sum(
      block, scores, lambda r: database[r], rows, alpha, include_self=False
    )
  return augmented
