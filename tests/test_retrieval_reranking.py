"""Geometric-verification re-ranking (inference.md §5.3; KB-41, KB-47, KB-53)."""

from __future__ import annotations

import numpy as np
import pytest

from delf import feature_io, matching
from delf.retrieval import reranking

_DIM = 64  # Random unit vectors in 64-D are ~1.41 apart: unrelated images never match.


def _scene(rng, num_features=40):
  descriptors = rng.normal(size=(num_features, _DIM))
  descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
  locations = rng.uniform(0, 200, size=(num_features, 2))
  return locations, descriptors


def _view(rng, scene, count=None, noise=0.01):
  """The scene's first ``count`` features seen under a random affine map."""
  locations, descriptors = scene
  count = len(locations) if count is None else count
  matrix = np.array([[0.9, 0.2], [-0.1, 1.1]]) + rng.normal(scale=0.05, size=(2, 2))
  moved = locations[:count] @ matrix.T + rng.uniform(-20, 20, size=2)
  noisy = descriptors[:count] + rng.normal(scale=noise, size=(count, _DIM))
  return moved, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def _write(path, locations, descriptors):
  n = len(locations)
  feature_io.WriteToFile(str(path), locations, np.ones(n), descriptors, np.ones(n))


def test_match_features_counts_inliers_of_an_affine_view():
  rng = np.random.default_rng(0)
  scene = _scene(rng)
  query_locations, query_descriptors = _view(rng, scene)
  score, viz = reranking.MatchFeatures(
    query_locations, query_descriptors, *scene, ransac_seed=0,
    descriptor_matching_threshold=0.5, ransac_residual_threshold=5.0,
  )  # fmt: skip
  assert score == 40
  assert viz == b""
  unrelated = _scene(rng)
  score, _ = reranking.MatchFeatures(query_locations, query_descriptors, *unrelated, ransac_seed=0)
  assert score == 0


def test_at_most_three_putative_matches_score_zero():
  rng = np.random.default_rng(1)
  scene = _scene(rng, num_features=4)
  query_locations, query_descriptors = _view(rng, scene)
  args = dict(ransac_seed=0, descriptor_matching_threshold=0.5, ransac_residual_threshold=5.0)
  assert reranking.MatchFeatures(query_locations, query_descriptors, *scene, **args)[0] == 4
  assert reranking.MatchFeatures(query_locations[:3], query_descriptors[:3], *scene, **args)[0] == 0


def test_empty_features_and_dimension_mismatch():
  rng = np.random.default_rng(2)
  locations, descriptors = _scene(rng)
  empty = (np.zeros([0, 2]), np.zeros([0, _DIM]))
  assert reranking.MatchFeatures(*empty, locations, descriptors) == (0, b"")
  assert reranking.MatchFeatures(locations, descriptors, *empty) == (0, b"")
  with pytest.raises(ValueError, match="dimensionality"):
    reranking.MatchFeatures(locations, descriptors, locations, descriptors[:, :8])


def test_match_direction_index_tree_queried_by_query(monkeypatch):
  # NN index is built on the INDEX descriptors and queried with the query's; RANSAC maps
  # index points (source) to query points (destination).
  rng = np.random.default_rng(3)
  scene = _scene(rng)
  query = _view(rng, scene)
  calls = {}
  original_putative, original_ransac = matching.putative_matches, matching.ransac_affine

  def putative(descriptors_1, descriptors_2, *args):
    calls["putative"] = (descriptors_1, descriptors_2)
    return original_putative(descriptors_1, descriptors_2, *args)

  def ransac(source, destination, **kwargs):
    calls["ransac"] = (source, destination, kwargs)
    return original_ransac(source, destination, **kwargs)

  monkeypatch.setattr(matching, "putative_matches", putative)
  monkeypatch.setattr(matching, "ransac_affine", ransac)
  score, _ = reranking.MatchFeatures(
    *query, *scene, ransac_seed=0, descriptor_matching_threshold=0.8, use_ratio_test=True
  )
  assert score == 40
  np.testing.assert_array_equal(calls["putative"][0], scene[1])
  np.testing.assert_array_equal(calls["putative"][1], query[1])
  source, destination, kwargs = calls["ransac"]
  np.testing.assert_array_equal(source, scene[0])  # Pairs in query order: identity here.
  np.testing.assert_array_equal(destination, query[0])
  assert kwargs == dict(residual_threshold=10.0, max_trials=1000, min_samples=3, seed=0)


def test_visualisation_is_a_jpeg():
  rng = np.random.default_rng(5)
  scene = _scene(rng)
  query = _view(rng, scene)
  image = np.zeros([220, 240, 3], np.uint8)
  score, viz = reranking.MatchFeatures(
    *query, *scene, ransac_seed=0, query_im_array=image, index_im_array=image
  )
  assert score > 0
  assert viz[:2] == b"\xff\xd8"


@pytest.fixture
def reranking_case(tmp_path):
  """6 index images; 3 (low global score) and 1 share the query's scene; 2 is junk."""
  rng = np.random.default_rng(6)
  scene = _scene(rng, num_features=60)
  query_dir, index_dir = tmp_path / "query", tmp_path / "index"
  query_dir.mkdir()
  index_dir.mkdir()
  _write(query_dir / "q.delf", *_view(rng, scene))
  _write(index_dir / "i0.delf", *_scene(rng))
  _write(index_dir / "i1.delf", *_view(rng, scene, count=20))
  _write(index_dir / "i2.delf", *_view(rng, scene))  # Would match, but junk.
  _write(index_dir / "i3.delf", *_view(rng, scene, count=50))
  _write(index_dir / "i4.delf", *_scene(rng))
  _write(index_dir / "i5.delf", *_scene(rng))
  names = [f"i{j}" for j in range(6)]
  scores = np.array([0.9, 0.5, 0.8, 0.1, 0.5, 0.7])
  ranks = np.argsort(-scores, kind="stable")  # [0, 2, 5, 1, 4, 3]
  return ranks, scores, names, str(query_dir), str(index_dir)


def test_rerank_order(reranking_case, capsys):
  ranks, scores, names, query_dir, index_dir = reranking_case
  output = reranking.RerankByGeometricVerification(
    ranks, scores, "q", names, query_dir, index_dir, junk_ids=[2], ransac_seed=0
  )
  # Inliers: i3 50, i1 20, others 0 (i2 is junk: not verified). Then by score, ties by id:
  # i0 0.9, i2 0.8, i5 0.7, i1/i4 0.5 -> i1 is verified; i4 keeps its place.
  assert output == [3, 1, 0, 2, 5, 4]
  assert capsys.readouterr().out.startswith("Starting to re-rank\n")


def test_rerank_keeps_ascending_id_for_ties(reranking_case):
  _, _, names, query_dir, index_dir = reranking_case
  scores = np.full(6, 0.5)
  output = reranking.RerankByGeometricVerification(
    np.arange(6), scores, "q", names, query_dir, index_dir, junk_ids=[], ransac_seed=0
  )
  assert output[:3] == [2, 3, 1]  # 60, 50, 20 inliers.
  assert output[3:] == [0, 4, 5]  # Zero inliers, equal scores: ascending id.


def test_missing_index_file_counts_zero_and_is_reported(reranking_case, tmp_path):
  ranks, scores, names, query_dir, index_dir = reranking_case
  (tmp_path / "index" / "i3.delf").unlink()
  report = reranking.VerificationReport()
  output = reranking.RerankByGeometricVerification(
    ranks, scores, "q", names, query_dir, index_dir, junk_ids=[2], ransac_seed=0, report=report
  )
  assert output == [1, 0, 2, 5, 4, 3]
  assert list(report.unreadable) == [str(tmp_path / "index" / "i3.delf")]
  assert "file not found" in report.Summary()


def test_inlier_cache_and_workers_give_identical_results(reranking_case, monkeypatch):
  ranks, scores, names, query_dir, index_dir = reranking_case
  reads = []
  original = matching.LocalFeatures.from_file.__func__

  def counting_from_file(cls, path):
    reads.append(str(path))
    return original(cls, path)

  monkeypatch.setattr(matching.LocalFeatures, "from_file", classmethod(counting_from_file))
  cache = {}
  first = reranking.RerankByGeometricVerification(
    ranks, scores, "q", names, query_dir, index_dir, [2], ransac_seed=0, inlier_cache=cache
  )
  # A second protocol with other junk reuses every pair already verified.
  second = reranking.RerankByGeometricVerification(
    ranks, scores, "q", names, query_dir, index_dir, [0], ransac_seed=0, inlier_cache=cache
  )
  # The second protocol only adds i2 (junk before): 6 index files, none read twice.
  index_reads = [path for path in reads if "index" in path]
  assert len(index_reads) == len(set(index_reads)) == 6
  threaded = reranking.RerankByGeometricVerification(
    ranks, scores, "q", names, query_dir, index_dir, [0], ransac_seed=0, num_workers=3
  )
  assert second == threaded
  assert first == [3, 1, 0, 2, 5, 4]


def test_input_sizes_are_checked(reranking_case):
  ranks, scores, names, query_dir, index_dir = reranking_case
  with pytest.raises(ValueError, match="input_ranks"):
    reranking.RerankByGeometricVerification(ranks[:5], scores, "q", names, query_dir, index_dir, [])
  with pytest.raises(ValueError, match="initial_scores"):
    reranking.RerankByGeometricVerification(ranks, scores[:5], "q", names, query_dir, index_dir, [])


def test_candidates_skip_junk_and_stop_at_100():
  ranks = np.arange(300)[::-1]
  candidates = reranking.RerankingCandidates(ranks, junk_ids=[299, 10, 5])
  assert len(candidates) == 100
  assert candidates[0] == 298
  assert 299 not in candidates
  assert list(reranking.RerankingCandidates([3, 1, 2], [1])) == [3, 2]
