"""Local-feature matching: nearest-neighbour putative matches + affine RANSAC.

This is the geometric verification of ``match_images.py`` (inference.md §4.2) and of
the re-ranker (§5.3), rewritten for speed without changing the result:

* Nearest neighbours. The reference builds a SciPy ``cKDTree`` on image 1's descriptors
  and queries every image-2 descriptor. In 128-1024 dimensions a KD-tree visits almost
  every leaf, i.e. it is a slow brute force. We do the same exact search as one
  (chunked) matrix product of squared distances, then recompute the exact squared
  distance of the chosen neighbour the way ``cKDTree`` does (sum of squared
  differences in float64) and compare it with ``bound ** 2`` — the strict
  ``d < distance_upper_bound`` of SciPy. Ties aside, the neighbours are SciPy's.
  Putative pairs come out in image-2 order, as the reference's loop built them
  (KB-50: same pairs, same order, vectorised).
* RANSAC. ``skimage.measure.ransac`` with ``AffineTransform``, ``min_samples=3`` runs
  one Python-level model fit per trial. We draw the minimal samples from the same
  random stream as scikit-image (``np.random.default_rng(seed).choice(M, 3,
  replace=False)`` once per trial, in the same order), solve all 3-point affine
  systems at once, compute every residual in one batch and then apply
  scikit-image's selection rules (most inliers, then smallest sum of squared
  residuals, earliest trial; its dynamic early stop). With a seed the inlier mask
  therefore equals scikit-image's for the same seed, and is deterministic (KB-49).
  The final transform is refitted on the inliers with scikit-image's estimator; as in
  scikit-image the returned inliers are those of the best sample.

Locations are (y, x) rows (KB-42); the affine model works on them as they are, so the
returned 3x3 matrix maps homogeneous (y, x, 1) of image 1 to (y, x, 1) of image 2.

This module must not import TensorFlow (it is used by TF-free scripts).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from delf import feature_io

# Rows of image-2 descriptors per distance block: bounds the temporary matrix to
# _CHUNK x N1 float64 (32 MB for N1 = 1000 would need 4000 rows).
_CHUNK_ROWS = 2048
# Trials per residual batch: _TRIAL_CHUNK x M x 2 float64 temporaries.
_TRIAL_CHUNK = 128
# Same floor as scikit-image's dynamic-trial computation.
_EPSILON = np.spacing(1)


@dataclasses.dataclass
class LocalFeatures:
  """Local features of one image.

  Attributes:
    locations: [N, 2] float keypoint locations as (y, x) (KB-42).
    descriptors: [N, D] float descriptors.
    scales: [N] feature scales (1 / pyramid scale, KB-37) or None.
    attention: [N] attention scores or None.
  """

  locations: np.ndarray
  descriptors: np.ndarray
  scales: np.ndarray | None = None
  attention: np.ndarray | None = None

  def __post_init__(self):
    self.locations = np.asarray(self.locations, dtype=np.float64).reshape(-1, 2)
    descriptors = np.asarray(self.descriptors, dtype=np.float64)
    if descriptors.ndim != 2:
      # feature_io returns a 1-D empty array for a file without features.
      descriptors = (
        descriptors.reshape(len(self.locations), -1)
        if descriptors.size
        else (np.zeros([len(self.locations), 0]))
      )
    self.descriptors = descriptors
    if self.descriptors.shape[0] != self.locations.shape[0]:
      raise ValueError(
        f"{self.locations.shape[0]} locations but {self.descriptors.shape[0]} descriptors"
      )

  @property
  def num_features(self) -> int:
    return int(self.locations.shape[0])

  @classmethod
  def from_file(cls, path: str | os.PathLike) -> LocalFeatures:
    """Reads a .delf / .delg_local file (feature_io format)."""
    locations, scales, descriptors, attention, _ = feature_io.ReadFromFile(os.fspath(path))
    return cls(locations=locations, descriptors=descriptors, scales=scales, attention=attention)


@dataclasses.dataclass
class MatchResult:
  """Result of :func:`match`.

  Attributes:
    pairs: int [M, 2] putative matches (index in features_1, index in features_2), in
      features_2 order.
    inliers: bool [M], True for RANSAC inliers (all False when RANSAC did not run).
    transform: 3x3 affine matrix mapping (y, x, 1) of image 1 to image 2, or None.
  """

  pairs: np.ndarray
  inliers: np.ndarray
  transform: np.ndarray | None

  @property
  def num_inliers(self) -> int:
    return int(np.count_nonzero(self.inliers))

  @property
  def num_putative(self) -> int:
    return int(self.pairs.shape[0])


def _squared_norms(x: np.ndarray) -> np.ndarray:
  return np.einsum("ij,ij->i", x, x)


def _exact_squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise sum((a - b)^2) in float64, as cKDTree computes distances."""
  diff = a - b
  return np.einsum("ij,ij->i", diff, diff)


def nearest_neighbors(
  descriptors_1: np.ndarray, descriptors_2: np.ndarray, k: int = 1
) -> tuple[np.ndarray, np.ndarray]:
  """Exact k nearest neighbours (k = 1 or 2) in ``descriptors_1`` of each row of ``descriptors_2``.

  Returns:
    (distances [N2, k] float64 Euclidean, indices [N2, k] int64), sorted by distance.
    Missing neighbours (k larger than N1) get distance inf and index N1, as in SciPy.
  """
  squared, indices = _nearest_neighbors_squared(descriptors_1, descriptors_2, k)
  return np.sqrt(squared), indices


def _nearest_neighbors_squared(
  descriptors_1: np.ndarray,
  descriptors_2: np.ndarray,
  k: int = 1,
  upper_bound_squared: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Like :func:`nearest_neighbors`, with exact squared float64 distances.

  With ``upper_bound_squared``, rows whose k-th neighbour is provably farther than
  the bound (float32 estimate minus its error bound) skip the exact check and report
  no neighbour (inf, N1), as SciPy does beyond ``distance_upper_bound``; rows that
  may lie within the bound get their exact neighbours.
  """
  d1 = np.ascontiguousarray(descriptors_1, dtype=np.float64)
  d2 = np.ascontiguousarray(descriptors_2, dtype=np.float64)
  n1, n2 = d1.shape[0], d2.shape[0]
  distances = np.full([n2, k], np.inf)
  indices = np.full([n2, k], n1, dtype=np.int64)
  if n1 == 0 or n2 == 0:
    return distances, indices
  # Rank with float32 |a|^2 + |b|^2 - 2ab (twice as fast as float64), then decide with
  # the exact float64 distance among every candidate whose approximate distance is
  # within the float32 error bound of the k-th smallest: the result is the exact
  # float64 k-NN (ties broken by the lower index), whatever the rounding.
  d1_fast = d1.astype(np.float32)
  norms_1 = _squared_norms(d1_fast)
  unit_roundoff = 2.0**-24
  dim = max(d1.shape[1], 1)
  gamma = (dim + 2) * unit_roundoff / (1 - (dim + 2) * unit_roundoff)
  max_norm_1 = float(norms_1.max())
  kk = min(k, n1)
  # [b, 1] . [-2a, |a|^2] = |a|^2 - 2ab: one product gives |a - b|^2 - |b|^2, a constant
  # shift per row that neither the ranking nor the candidate test depends on.
  augmented_1 = np.empty([n1, d1.shape[1] + 1], dtype=np.float32)
  augmented_1[:, :-1] = -2.0 * d1_fast
  augmented_1[:, -1] = norms_1
  for start in range(0, n2, _CHUNK_ROWS):
    block = d2[start : start + _CHUNK_ROWS]
    augmented_b = np.ones([block.shape[0], block.shape[1] + 1], dtype=np.float32)
    augmented_b[:, :-1] = block
    norms_b = _squared_norms(augmented_b[:, :-1])
    shifted = augmented_b @ augmented_1.T
    if kk == 1:
      kth = shifted.min(axis=1)
    else:
      kth = np.partition(shifted, kk - 1, axis=1)[:, kk - 1]
    tolerance = 4.0 * gamma * (max_norm_1 + norms_b) + 1e-30
    live = np.arange(block.shape[0])
    if upper_bound_squared is not None:
      live = np.flatnonzero(kth + norms_b - tolerance < upper_bound_squared)
    sub_rows, cols = np.nonzero(shifted[live] <= (kth[live] + tolerance[live])[:, None])
    rows = live[sub_rows]
    exact = _exact_squared_distances(block[rows], d1[cols])
    order = np.lexsort((cols, exact, rows))
    rows, cols, exact = rows[order], cols[order], exact[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    keep = rank < kk
    distances[start + rows[keep], rank[keep]] = exact[keep]
    indices[start + rows[keep], rank[keep]] = cols[keep]
  return distances, indices


def putative_matches(
  descriptors_1: np.ndarray,
  descriptors_2: np.ndarray,
  distance_threshold: float = 0.8,
  use_ratio_test: bool = False,
) -> np.ndarray:
  """Pairs (index in 1, index in 2) of mutual candidates, in descriptors_2 order.

  Without the ratio test a feature of image 2 is matched to its nearest neighbour in
  image 1 if the Euclidean distance is strictly below ``distance_threshold`` (SciPy's
  ``distance_upper_bound``: squared distance < threshold ** 2). With the ratio test the
  two nearest neighbours are found (no distance bound) and the match is kept if
  ``d1 < distance_threshold * d2``; with a single feature in image 1, d2 = inf and the
  match is kept.
  """
  d1 = np.asarray(descriptors_1, dtype=np.float64)
  d2 = np.asarray(descriptors_2, dtype=np.float64)
  if d1.shape[0] == 0 or d2.shape[0] == 0:
    return np.zeros([0, 2], dtype=np.int64)
  if d1.shape[1] != d2.shape[1]:
    raise ValueError(
      f"descriptor dimensions differ: {d1.shape[1]} (image 1) vs {d2.shape[1]} (image 2)"
    )
  if use_ratio_test:
    distances, indices = nearest_neighbors(d1, d2, k=2)
    keep = distances[:, 0] < distance_threshold * distances[:, 1]
  else:
    # SciPy compares squared distances with distance_upper_bound ** 2.
    bound = float(distance_threshold) ** 2
    squared, indices = _nearest_neighbors_squared(d1, d2, k=1, upper_bound_squared=bound)
    keep = squared[:, 0] < bound
  image_2_indices = np.flatnonzero(keep)
  return np.stack([indices[image_2_indices, 0], image_2_indices], axis=1).astype(np.int64)


def _draw_samples(
  rng: np.random.Generator, num_points: int, min_samples: int, num_trials: int
) -> np.ndarray:
  """The next minimal samples of scikit-image's ransac stream: [num_trials, min_samples]."""
  return np.stack([rng.choice(num_points, min_samples, replace=False) for _ in range(num_trials)])


def _fit_minimal_samples(
  sample_src: np.ndarray, sample_dst: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Affine parameters [T, 3, 2] (dst = [src, 1] @ params) of T samples, and validity [T].

  Three points determine the map exactly (one 3x3 solve each); more are fitted by
  least squares. Collinear samples are invalid (scikit-image skips failed fits too).
  """
  if sample_src.shape[1] == 3:
    det = np.linalg.det(sample_src)
    scale = np.prod(np.linalg.norm(sample_src, axis=2), axis=1)
    valid = np.abs(det) > 1e-10 * np.maximum(scale, 1e-300)
    safe_src = np.where(valid[:, None, None], sample_src, np.eye(3))
    return np.linalg.solve(safe_src, sample_dst), valid
  normal = np.einsum("tsi,tsj->tij", sample_src, sample_src)
  det = np.linalg.det(normal)
  valid = np.abs(det) > 1e-10 * np.maximum(np.abs(np.trace(normal, axis1=1, axis2=2)) ** 3, 1e-300)
  safe_normal = np.where(valid[:, None, None], normal, np.eye(3))
  return np.linalg.solve(safe_normal, np.einsum("tsi,tsj->tij", sample_src, sample_dst)), valid


def _dynamic_max_trials(num_inliers: int, num_points: int, min_samples: int) -> float:
  """scikit-image's trial bound for stop_probability = 1 (stops only near 100 % inliers)."""
  if num_inliers == 0:
    return np.inf
  denominator = 1.0 - (num_inliers / num_points) ** min_samples
  nominator = np.clip(0.0, _EPSILON, 1 - _EPSILON)
  denominator = np.clip(denominator, _EPSILON, 1 - _EPSILON)
  return float(np.ceil(np.log(nominator) / np.log(denominator)))


def _normalizer(points: np.ndarray) -> np.ndarray | None:
  """3x3 matrix moving the centroid to 0 and the RMS coordinate to 1 (None if degenerate)."""
  centroid = points.mean(axis=0)
  divisor = np.sqrt(np.mean((points - centroid) ** 2))
  if not np.isfinite(divisor) or divisor == 0:
    return None
  matrix = np.eye(3)
  matrix[:2, 2] = -centroid
  matrix[:2, :] /= divisor
  return matrix


def fit_affine(source: np.ndarray, destination: np.ndarray) -> np.ndarray | None:
  """Affine transform (3x3) fitted to all correspondences ``source`` [K, 2] -> ``destination``.

  The same estimator as scikit-image's ``AffineTransform.from_estimate`` (points
  centred and RMS-normalised, smallest right singular vector of the linear system),
  so the refitted transform equals the one the reference's RANSAC returned.

  Returns:
    The matrix, or None when the points do not determine an affine map (fewer than
    3, or all collinear).
  """
  source = np.asarray(source, dtype=np.float64).reshape(-1, 2)
  destination = np.asarray(destination, dtype=np.float64).reshape(-1, 2)
  n = source.shape[0]
  if n < 3 or np.linalg.matrix_rank(np.c_[source - source.mean(axis=0), np.ones(n)]) < 3:
    return None
  source_norm, destination_norm = _normalizer(source), _normalizer(destination)
  if source_norm is None or destination_norm is None:
    return None
  src = source @ source_norm[:2, :2].T + source_norm[:2, 2]
  dst = destination @ destination_norm[:2, :2].T + destination_norm[:2, 2]
  system = np.zeros([2 * n, 7])
  system[:n, 0:2] = src
  system[:n, 2] = 1.0
  system[:n, 6] = dst[:, 0]
  system[n:, 3:5] = src
  system[n:, 5] = 1.0
  system[n:, 6] = dst[:, 1]
  _, _, v = np.linalg.svd(system, full_matrices=False)
  if np.isclose(v[-1, -1], 0):
    return None
  matrix = np.eye(3)
  matrix.flat[:6] = -v[-1, :-1] / v[-1, -1]
  matrix = np.linalg.inv(destination_norm) @ matrix @ source_norm
  return matrix / matrix[2, 2]


def ransac_affine(
  source: np.ndarray,
  destination: np.ndarray,
  *,
  residual_threshold: float = 20.0,
  max_trials: int = 1000,
  min_samples: int = 3,
  seed: int | None = 0,
) -> tuple[np.ndarray | None, np.ndarray]:
  """Vectorised RANSAC for an affine model, with scikit-image's sampling and selection.

  Args:
    source: [M, 2] points of image 1.
    destination: [M, 2] corresponding points of image 2.
    residual_threshold: a pair is an inlier if its residual is strictly below this.
    max_trials: number of random minimal samples.
    min_samples: points per minimal sample (3 determines an affine map exactly; more
      samples are fitted by least squares).
    seed: seed of ``np.random.default_rng``; None = unseeded.

  Returns:
    (3x3 transform or None, inlier mask bool [M]). With fewer than ``min_samples``
    points, or when no sample gives any inlier, the transform is None and no point
    is an inlier.
  """
  source = np.asarray(source, dtype=np.float64).reshape(-1, 2)
  destination = np.asarray(destination, dtype=np.float64).reshape(-1, 2)
  num_points = source.shape[0]
  no_inliers = np.zeros([num_points], dtype=bool)
  if num_points < max(min_samples, 3) or max_trials <= 0:
    return None, no_inliers
  homogeneous = np.concatenate([source, np.ones([num_points, 1])], axis=1)
  rng = np.random.default_rng(seed)

  # A chunk of trials at a time: draw the samples (scikit-image's stream), fit them all,
  # compute every residual, then apply scikit-image's sequential selection, including
  # its dynamic early stop (which also saves the remaining chunks).
  best_trial, best_count, best_sum, best_params = -1, 0, np.inf, None
  trial_limit = float(max_trials)
  for start in range(0, max_trials, _TRIAL_CHUNK):
    if start >= trial_limit:
      break
    stop = min(start + _TRIAL_CHUNK, max_trials)
    samples = _draw_samples(rng, num_points, min_samples, stop - start)
    params, valid = _fit_minimal_samples(homogeneous[samples], destination[samples])
    # One GEMM for all models: [M, 3] @ [3, T * 2] -> predictions [M, T, 2].
    num_chunk = params.shape[0]
    predicted = (homogeneous @ params.transpose(1, 0, 2).reshape(3, 2 * num_chunk)).reshape(
      num_points, num_chunk, 2
    )
    delta_y = predicted[:, :, 0] - destination[:, 0:1]
    delta_x = predicted[:, :, 1] - destination[:, 1:2]
    residuals = np.sqrt(delta_y * delta_y + delta_x * delta_x)  # [M, T]
    counts = np.count_nonzero(residuals < residual_threshold, axis=0)
    residual_sums = np.einsum("mt,mt->t", residuals, residuals)
    for offset in range(stop - start):
      trial = start + offset
      if trial >= trial_limit:
        break
      if not valid[offset]:
        continue
      count, residual_sum = int(counts[offset]), residual_sums[offset]
      if count > best_count or (count == best_count and residual_sum < best_sum):
        best_trial, best_count, best_sum = trial, count, residual_sum
        best_params = params[offset]
        trial_limit = min(trial_limit, _dynamic_max_trials(count, num_points, min_samples))
  if best_trial < 0 or best_count == 0:
    return None, no_inliers

  predicted = homogeneous @ best_params
  inliers = np.sqrt(np.sum((predicted - destination) ** 2, axis=1)) < residual_threshold
  transform = fit_affine(source[inliers], destination[inliers])
  return transform, inliers


def match(
  features_1: LocalFeatures,
  features_2: LocalFeatures,
  *,
  distance_threshold: float = 0.8,
  use_ratio_test: bool = False,
  ransac_residual_threshold: float = 20.0,
  max_trials: int = 1000,
  min_samples: int = 3,
  seed: int | None = 0,
) -> MatchResult:
  """Matches two images' local features and verifies them with affine RANSAC.

  Defaults are ``match_images.py``'s (KB-51): distance bound 0.8, residual threshold
  20 px, 1000 trials, 3 samples; the seed makes the inlier count reproducible (KB-49).
  RANSAC maps image-1 locations to image-2 locations. Fewer than ``min_samples``
  putative matches: no transform, no inlier.
  """
  pairs = putative_matches(
    features_1.descriptors, features_2.descriptors, distance_threshold, use_ratio_test
  )
  if pairs.shape[0] < min_samples:
    return MatchResult(pairs=pairs, inliers=np.zeros([pairs.shape[0]], dtype=bool), transform=None)
  transform, inliers = ransac_affine(
    features_1.locations[pairs[:, 0]],
    features_2.locations[pairs[:, 1]],
    residual_threshold=ransac_residual_threshold,
    max_trials=max_trials,
    min_samples=min_samples,
    seed=seed,
  )
  return MatchResult(pairs=pairs, inliers=inliers, transform=transform)
