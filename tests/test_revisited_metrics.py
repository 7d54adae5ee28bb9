"""Revisited Oxford/Paris protocols and metrics: the reference test vectors (inference.md §8.6)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from delf.retrieval import revisited


def _gt(**kwargs):
  return {k: np.array(v) for k, v in kwargs.items()}


def test_parse_easy_medium_hard_ground_truth():
  ground_truth = [
    _gt(easy=[10, 56, 100], hard=[0], junk=[6, 90]),
    _gt(easy=[], hard=[5], junk=[99, 100]),
    _gt(easy=[33], hard=[66, 99], junk=[]),
  ]
  easy, medium, hard = revisited.ParseEasyMediumHardGroundTruth(ground_truth)
  expected_easy = [([10, 56, 100], [6, 90, 0]), ([], [99, 100, 5]), ([33], [66, 99])]
  expected_medium = [([10, 56, 100, 0], [6, 90]), ([5], [99, 100]), ([33, 66, 99], [])]
  expected_hard = [([0], [6, 90, 10, 56, 100]), ([5], [99, 100]), ([66, 99], [33])]
  for got, expected in ((easy, expected_easy), (medium, expected_medium), (hard, expected_hard)):
    assert len(got) == 3
    for entry, (ok, junk) in zip(got, expected, strict=True):
      assert sorted(entry) == ["junk", "ok"]
      np.testing.assert_array_equal(entry["ok"], ok)
      np.testing.assert_array_equal(entry["junk"], junk)


def test_adjust_positive_ranks_in_place():
  positive = np.array([0, 2, 6, 10, 20])
  result = revisited.AdjustPositiveRanks(positive, np.array([1, 8, 9, 30]))
  np.testing.assert_array_equal(result, [0, 1, 5, 7, 17])
  assert result is positive  # Modified in place, like the reference.
  unchanged = np.array([3, 4])
  assert revisited.AdjustPositiveRanks(unchanged, np.array([], dtype=int)) is unchanged
  np.testing.assert_array_equal(unchanged, [3, 4])


def test_compute_average_precision():
  assert revisited.ComputeAveragePrecision(np.array([0, 2, 5])) == pytest.approx(0.677778, abs=1e-6)
  assert revisited.ComputeAveragePrecision(np.array([], dtype=int)) == 0.0
  # Closed form: all positives first -> AP 1.
  assert revisited.ComputeAveragePrecision(np.arange(7)) == pytest.approx(1.0)


def test_compute_pr_at_ranks():
  precisions, recalls = revisited.ComputePRAtRanks(np.array([0, 2, 5]), [1, 5, 10])
  np.testing.assert_allclose(precisions, [1.0, 0.4, 0.5], atol=1e-6)
  np.testing.assert_allclose(recalls, [0.333333, 0.666667, 1.0], atol=1e-6)
  # Precision beyond the last positive is taken at the last positive (KB-54).
  precisions, recalls = revisited.ComputePRAtRanks(np.array([0, 7]), [10])
  np.testing.assert_allclose(precisions, [0.25])
  np.testing.assert_allclose(recalls, [1.0])
  precisions, recalls = revisited.ComputePRAtRanks(np.array([], dtype=int), [1, 5])
  np.testing.assert_array_equal(precisions, [0, 0])
  np.testing.assert_array_equal(recalls, [0, 0])


def test_compute_metrics():
  sorted_ids = np.array([[4, 2, 0, 1, 3], [0, 2, 4, 1, 3], [0, 1, 2, 3, 4]])
  ground_truth = [
    {"ok": np.array([0, 1]), "junk": np.array([2])},
    {"ok": np.array([0, 4]), "junk": np.array([])},
    {"ok": np.array([]), "junk": np.array([])},
  ]
  mean_ap, mean_p, mean_r, aps, precisions, recalls = revisited.ComputeMetrics(
    sorted_ids, ground_truth, [1, 2, 5]
  )
  assert mean_ap == pytest.approx(0.604167, abs=1e-6)
  np.testing.assert_allclose(mean_p, [0.5, 0.5, 0.666667], atol=1e-6)
  np.testing.assert_allclose(mean_r, [0.25, 0.5, 1.0], atol=1e-6)
  np.testing.assert_allclose(aps, [0.416667, 0.791667, np.nan], atol=1e-6)
  np.testing.assert_allclose(
    precisions, [[0, 0.5, 0.666667], [1, 0.5, 0.666667], [np.nan] * 3], atol=1e-6
  )
  np.testing.assert_allclose(recalls, [[0, 0.5, 1], [0.5, 0.5, 1], [np.nan] * 3], atol=1e-6)


def test_compute_metrics_rejects_rank_beyond_index():
  with pytest.raises(ValueError, match="PR ranks up to 6"):
    revisited.ComputeMetrics(np.zeros((1, 5), int), [{"ok": [0], "junk": []}], [1, 6])
  with pytest.raises(ValueError, match="No query has any positive"):
    revisited.ComputeMetrics(np.zeros((1, 5), int), [{"ok": [], "junk": []}], [1])


def test_create_config_for_test_dataset(tmp_path):
  content = {"imlist": ["a", "b", "c"], "qimlist": ["q"], "gnd": [{"easy": [0]}]}
  with open(tmp_path / "gnd_roxford5k.pkl", "wb") as f:
    pickle.dump(content, f)
  cfg = revisited.CreateConfigForTestDataset("ROxford5k", str(tmp_path))
  assert cfg["dataset"] == "roxford5k"
  assert (cfg["n"], cfg["nq"]) == (3, 1)
  assert cfg["gnd_fname"] == str(tmp_path / "gnd_roxford5k.pkl")
  assert cfg["dir_images"] == str(tmp_path / "oxford5k_images")
  assert cfg["im_fname"](cfg, 1) == str(tmp_path / "oxford5k_images" / "b.jpg")
  assert cfg["qim_fname"](cfg, 0) == str(tmp_path / "oxford5k_images" / "q.jpg")
  with pytest.raises(ValueError, match="Unknown dataset"):
    revisited.CreateConfigForTestDataset("oxford105k", str(tmp_path))


def test_evaluation_modules_do_not_import_tensorflow():
  code = (
    "import sys\n"
    "import delf.retrieval.revisited, delf.retrieval.metrics_file\n"
    "import delf.retrieval.gldv2_io, delf.retrieval.gldv2_metrics\n"
    "assert 'tensorflow' not in sys.modules, 'TensorFlow imported'\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True)
