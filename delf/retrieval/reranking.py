"""Re-ranking retrieval results by geometric verification (inference.md §5.3).

For each query the top ``_NUM_TO_RERANK`` non-junk images of the global
ranking are matched with local features (nearest neighbours of the query
descriptors among the INDEX image's descriptors, then affine RANSAC from index
points to query points, seed 0 in DELG) and the number of inliers becomes the
primary sort key. The output keeps every index id (junk included) and sorts
by ``(inliers, initial score)`` descending with a stable sort, so ties keep
ascending id order (KEEP, KB-53).

Speed without changing results: the reference re-read every candidate's
feature file from disk per query and per protocol (medium and hard re-rank
separately because their junk sets differ) and matched each pair twice.
``VerifyPairs`` matches every distinct (query, index image) pair once,
reading each feature file once, and can use several threads; the inlier
count of a pair does not depend on the order or thread it is computed in
(RANSAC is seeded per pair). SciPy's removed ``n_jobs`` is never used (KB-47).

A missing or unreadable local-feature file counts as 0 inliers and is
reported (KB-41).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from delf import matching

_NUM_TO_RERANK = 100
_NUM_RANSAC_TRIALS = 1000
_MIN_RANSAC_SAMPLES = 3
_STATUS_CHECK_GV_ITERATIONS = 10
# At least this many putative matches are needed to run RANSAC (the reference: > 3).
_MIN_PUTATIVE_MATCHES = 4


def MatchFeatures(
  query_locations: np.ndarray,
  query_descriptors: np.ndarray,
  index_locations: np.ndarray,
  index_descriptors: np.ndarray,
  ransac_seed: int | None = None,
  descriptor_matching_threshold: float = 0.9,
  ransac_residual_threshold: float = 10.0,
  query_im_array: np.ndarray | None = None,
  index_im_array: np.ndarray | None = None,
  query_im_scale_factors: Sequence[float] | None = None,
  index_im_scale_factors: Sequence[float] | None = None,
  use_ratio_test: bool = False,
) -> tuple[int, bytes]:
  """Number of RANSAC inliers between a query and an index image.

  Args:
    query_locations, query_descriptors: query features, [N, 2] (y, x) and [N, D].
    index_locations, index_descriptors: index image features, [M, 2] and [M, D].
    ransac_seed: RANSAC seed (DELG retrieval passes 0).
    descriptor_matching_threshold: distance bound (strict), or the ratio with
      ``use_ratio_test``.
    ransac_residual_threshold: inlier residual in pixels.
    query_im_array, index_im_array: images; when both are given a JPEG showing
      the inlier matches is returned as well.
    query_im_scale_factors, index_im_scale_factors: (y, x) factors applied to the
      locations for the visualisation (default [1.0, 1.0]).
    use_ratio_test: Lowe's ratio test instead of the distance bound.

  Returns:
    ``(score, match_viz_bytes)``: the inlier count (0 with no features or with
    at most 3 putative matches) and the JPEG bytes (``b''`` without images).

  Raises:
    ValueError: the two images' descriptor dimensionalities differ.
  """
  query = matching.LocalFeatures(query_locations, query_descriptors)
  index = matching.LocalFeatures(index_locations, index_descriptors)
  score, result = _Match(
    query, index, ransac_seed, descriptor_matching_threshold, ransac_residual_threshold,
    use_ratio_test,
  )  # fmt: skip
  if not score or query_im_array is None or index_im_array is None:
    return score, b""
  return score, _VisualizeInliers(
    query, index, result, query_im_array, index_im_array,
    query_im_scale_factors, index_im_scale_factors,
  )  # fmt: skip


def _Match(
  query: matching.LocalFeatures,
  index: matching.LocalFeatures,
  ransac_seed: int | None,
  descriptor_matching_threshold: float,
  ransac_residual_threshold: float,
  use_ratio_test: bool,
) -> tuple[int, matching.MatchResult | None]:
  if not query.num_features or not index.num_features:
    return 0, None
  if query.descriptors.shape[1] != index.descriptors.shape[1]:
    raise ValueError(
      "Local feature dimensionality is not consistent for query and index images: "
      f"{query.descriptors.shape[1]} vs {index.descriptors.shape[1]}"
    )
  pairs = matching.putative_matches(
    index.descriptors, query.descriptors, descriptor_matching_threshold, use_ratio_test
  )
  if pairs.shape[0] < _MIN_PUTATIVE_MATCHES:
    return 0, None
  transform, inliers = matching.ransac_affine(
    index.locations[pairs[:, 0]],
    query.locations[pairs[:, 1]],
    residual_threshold=ransac_residual_threshold,
    max_trials=_NUM_RANSAC_TRIALS,
    min_samples=_MIN_RANSAC_SAMPLES,
    seed=ransac_seed,
  )
  result = matching.MatchResult(pairs=pairs, inliers=inliers, transform=transform)
  return result.num_inliers, result


def _VisualizeInliers(
  query: matching.LocalFeatures,
  index: matching.LocalFeatures,
  result: matching.MatchResult,
  query_image: np.ndarray,
  index_image: np.ndarray,
  query_scale_factors: Sequence[float] | None,
  index_scale_factors: Sequence[float] | None,
) -> bytes:
  """JPEG of the two images side by side with lines between inlier matches."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  query_factors = np.asarray(query_scale_factors or [1.0, 1.0], dtype=np.float64)
  index_factors = np.asarray(index_scale_factors or [1.0, 1.0], dtype=np.float64)
  pairs = result.pairs[result.inliers]
  query_points = query.locations[pairs[:, 1]] * query_factors
  index_points = index.locations[pairs[:, 0]] * index_factors
  height = max(query_image.shape[0], index_image.shape[0])
  canvas = np.zeros([height, query_image.shape[1] + index_image.shape[1], 3], dtype=np.uint8)
  canvas[: query_image.shape[0], : query_image.shape[1]] = _AsRgb(query_image)
  canvas[: index_image.shape[0], query_image.shape[1] :] = _AsRgb(index_image)
  figure, axes = plt.subplots()
  try:
    axes.imshow(canvas)
    for (qy, qx), (iy, ix) in zip(query_points, index_points):
      axes.plot([qx, ix + query_image.shape[1]], [qy, iy], "-", linewidth=0.8)
    axes.axis("off")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="jpeg", bbox_inches="tight")
  finally:
    plt.close(figure)
  return buffer.getvalue()


def _AsRgb(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  return image[..., :3].astype(np.uint8)


def RerankingCandidates(
  input_ranks: Sequence[int], junk_ids: Iterable[int], num_to_rerank: int = _NUM_TO_RERANK
) -> np.ndarray:
  """The index ids to verify: the first ``num_to_rerank`` non-junk ids of the ranking."""
  input_ranks = np.asarray(input_ranks)
  junk = np.asarray(list(junk_ids) if not isinstance(junk_ids, np.ndarray) else junk_ids)
  candidates = input_ranks[~np.isin(input_ranks, junk)] if junk.size else input_ranks
  return candidates[:num_to_rerank]


def SortByInliersAndScores(inliers: np.ndarray, initial_scores: np.ndarray) -> np.ndarray:
  """All ids sorted by (inliers, initial score) descending; ties keep ascending id order."""
  inliers = np.asarray(inliers)
  initial_scores = np.asarray(initial_scores)
  ids = np.arange(len(inliers))
  return np.lexsort((ids, -initial_scores, -inliers))


@dataclasses.dataclass(frozen=True)
class MatchingOptions:
  """Geometric-verification settings (reference defaults of ``image_reranking``, KB-51)."""

  local_feature_extension: str = ".delf"
  ransac_seed: int | None = None
  descriptor_matching_threshold: float = 0.9
  ransac_residual_threshold: float = 10.0
  use_ratio_test: bool = False


@dataclasses.dataclass
class VerificationReport:
  """What could not be read while verifying (KB-41): paths and their problem."""

  unreadable: dict[str, str] = dataclasses.field(default_factory=dict)

  def Summary(self, limit: int = 10) -> str:
    items = sorted(self.unreadable.items())
    lines = [f"{len(items)} local-feature file(s) missing or unreadable (counted as 0 inliers):"]
    lines += [f"  {path}: {problem}" for path, problem in items[:limit]]
    if len(items) > limit:
      lines.append(f"  ... and {len(items) - limit} more")
    return "\n".join(lines)


def _LoadFeatures(path: str, report: VerificationReport) -> matching.LocalFeatures | None:
  try:
    features = matching.LocalFeatures.from_file(path)
  except FileNotFoundError:
    report.unreadable[path] = "file not found"
    return None
  except Exception as e:  # A corrupt protobuf raises DecodeError; any failure means 0 inliers.
    report.unreadable[path] = f"cannot parse ({type(e).__name__}: {e})"
    return None
  # Values were stored as float32: keeping them as float32 halves the memory and is exact.
  features.descriptors = features.descriptors.astype(np.float32)
  return features


def VerifyPairs(
  pairs: Mapping[str, Iterable[str]],
  query_features_dir: str,
  index_features_dir: str,
  options: MatchingOptions,
  *,
  num_workers: int = 1,
  report: VerificationReport | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> dict[tuple[str, str], int]:
  """Inlier counts of every requested (query, index image) pair, each matched once.

  Args:
    pairs: query name -> index image names to verify against it.
    query_features_dir, index_features_dir: folders with ``<name><extension>`` files.
    options: matching settings.
    num_workers: threads matching index images in parallel (results do not depend on it).
    report: collects missing/unreadable files (KB-41); a new one if None.
    progress: called as ``progress(done, total)`` after each index image.

  Returns:
    ``{(query_name, index_name): inliers}`` for every requested pair.

  Raises:
    ValueError: a query and an index image have different descriptor dimensions.
  """
  report = report if report is not None else VerificationReport()
  extension = options.local_feature_extension
  queries: dict[str, matching.LocalFeatures | None] = {}
  by_index: dict[str, dict[str, None]] = {}  # Ordered sets of query names.
  for query_name, index_names in pairs.items():
    queries[query_name] = _LoadFeatures(
      os.path.join(query_features_dir, query_name + extension), report
    )
    for index_name in index_names:
      by_index.setdefault(index_name, {})[query_name] = None

  def verify_index_image(index_name: str) -> list[tuple[tuple[str, str], int]]:
    # Each index file is read once, here, and matched against every query that needs it.
    path = os.path.join(index_features_dir, index_name + extension)
    index = _LoadFeatures(path, report)
    results = []
    for query_name in by_index[index_name]:
      query = queries[query_name]
      score = 0
      if query is not None and index is not None:
        try:
          score, _ = _Match(
            query, index, options.ransac_seed, options.descriptor_matching_threshold,
            options.ransac_residual_threshold, options.use_ratio_test,
          )  # fmt: skip
        except ValueError as e:
          raise ValueError(f"query {query_name} vs index image {index_name}: {e}") from None
      results.append(((query_name, index_name), score))
    return results

  inliers: dict[tuple[str, str], int] = {}
  index_names = list(by_index)
  total = len(index_names)
  if num_workers <= 1:
    for done, index_name in enumerate(index_names, start=1):
      inliers.update(verify_index_image(index_name))
      if progress:
        progress(done, total)
  else:
    with concurrent.futures.ThreadPoolExecutor(max_workers=num_workers) as pool:
      for done, results in enumerate(pool.map(verify_index_image, index_names), start=1):
        inliers.update(results)
        if progress:
          progress(done, total)
  return inliers


def RerankByGeometricVerification(
  input_ranks: Sequence[int],
  initial_scores: Sequence[float],
  query_name: str,
  index_names: Sequence[str],
  query_features_dir: str,
  index_features_dir: str,
  junk_ids: Iterable[int],
  local_feature_extension: str = ".delf",
  ransac_seed: int | None = None,
  descriptor_matching_threshold: float = 0.9,
  ransac_residual_threshold: float = 10.0,
  use_ratio_test: bool = False,
  *,
  inlier_cache: dict[tuple[str, str], int] | None = None,
  num_workers: int = 1,
  report: VerificationReport | None = None,
) -> list[int]:
  """Re-ranks one query's global ranking by geometric verification.

  Args:
    input_ranks: all index ids, best first (global ranking).
    initial_scores: global similarity per index id.
    query_name: query image name (feature file stem).
    index_names: index image names, one per id.
    query_features_dir, index_features_dir: folders with the local-feature files.
    junk_ids: ids left out of the verification (they stay in the output).
    local_feature_extension, ransac_seed, descriptor_matching_threshold,
      ransac_residual_threshold, use_ratio_test: matching settings.
    inlier_cache: optional ``{(query, index name): inliers}`` shared across calls
      (e.g. between the medium and hard protocols) so that no pair is matched twice.
    num_workers: matching threads.
    report: collects missing/unreadable feature files (KB-41).

  Returns:
    All index ids sorted by (inliers, initial score) descending, stable.

  Raises:
    ValueError: ``input_ranks`` or ``initial_scores`` do not have one entry per
      index image.
  """
  num_index_images = len(index_names)
  if len(input_ranks) != num_index_images:
    raise ValueError(
      f"input_ranks and index_names have different sizes: {len(input_ranks)} vs {num_index_images}"
    )
  if len(initial_scores) != num_index_images:
    raise ValueError(
      f"initial_scores and index_names have different sizes: {len(initial_scores)} vs "
      f"{num_index_images}"
    )
  candidates = RerankingCandidates(input_ranks, junk_ids)
  cache = inlier_cache if inlier_cache is not None else {}
  to_verify = [index_names[j] for j in candidates if (query_name, index_names[j]) not in cache]
  print("Starting to re-rank")
  if to_verify:
    options = MatchingOptions(
      local_feature_extension=local_feature_extension,
      ransac_seed=ransac_seed,
      descriptor_matching_threshold=descriptor_matching_threshold,
      ransac_residual_threshold=ransac_residual_threshold,
      use_ratio_test=use_ratio_test,
    )

    def progress(done: int, total: int) -> None:
      if done % _STATUS_CHECK_GV_ITERATIONS == 0 and done < total:
        print(f"Re-ranking: i = {done} out of {total}")

    cache.update(
      VerifyPairs(
        {query_name: to_verify},
        query_features_dir,
        index_features_dir,
        options,
        num_workers=num_workers,
        report=report,
        progress=progress,
      )
    )
  inliers = np.zeros([num_index_images], dtype=np.int64)
  for j in candidates:
    inliers[j] = cache[(query_name, index_names[j])]
  return SortByInliersAndScores(inliers, np.asarray(initial_scores)).tolist()
