"""GLDv2 metrics: the reference test vectors (inference.md §8.7) and KB-57."""

from __future__ import annotations

import numpy as np
import pytest

from delf.retrieval import gldv2_metrics

_RECOGNITION_SOLUTION = {
  "0123456789abcdef": [0, 12],
  "0223456789abcdef": [100, 200, 300],
  "0323456789abcdef": [1],
  "0423456789abcdef": [],
  "0523456789abcdef": [],
}
_RECOGNITION_PREDICTIONS = {
  "0223456789abcdef": {"class": 0, "score": 0.01},
  "0323456789abcdef": {"class": 1, "score": 10.0},
  "0423456789abcdef": {"class": 150, "score": 15.0},
}
_RETRIEVAL_SOLUTION = {
  "0123456789abcdef": ["fedcba9876543210", "fedcba9876543220"],
  "0223456789abcdef": ["fedcba9876543210"],
  "0323456789abcdef": ["fedcba9876543230", "fedcba9876543240", "fedcba9876543250"],
  "0423456789abcdef": ["fedcba9876543230"],
}
_RETRIEVAL_PREDICTIONS = {
  "0223456789abcdef": ["fedcba9876543200", "fedcba9876543210"],
  "0323456789abcdef": ["fedcba9876543240"],
  "0423456789abcdef": ["fedcba9876543230", "fedcba9876543240"],
}


def test_global_average_precision():
  gap = gldv2_metrics.GlobalAveragePrecision(_RECOGNITION_PREDICTIONS, _RECOGNITION_SOLUTION)
  assert gap == pytest.approx(0.166667, abs=1e-6)
  gap = gldv2_metrics.GlobalAveragePrecision(
    _RECOGNITION_PREDICTIONS, _RECOGNITION_SOLUTION, ignore_non_gt_test_images=True
  )
  assert gap == pytest.approx(0.333333, abs=1e-6)


def test_global_average_precision_tie_order():
  # Equal scores: id ascending decides, so the hit on "a" comes first (1/1 + 2/2).
  solution = {"a": [1], "b": [2], "c": [3]}
  predictions = {"b": {"class": 2, "score": 1.0}, "a": {"class": 1, "score": 1.0}}
  assert gldv2_metrics.GlobalAveragePrecision(predictions, solution) == pytest.approx(2 / 3)
  predictions = {"b": {"class": 2, "score": 1.0}, "a": {"class": 9, "score": 1.0}}
  # "a" (miss) ranks first, then "b" (hit at position 2): 1/2 over 3 positives.
  assert gldv2_metrics.GlobalAveragePrecision(predictions, solution) == pytest.approx(1 / 6)


def test_top1_accuracy():
  accuracy = gldv2_metrics.Top1Accuracy(_RECOGNITION_PREDICTIONS, _RECOGNITION_SOLUTION)
  assert accuracy == pytest.approx(0.333333, abs=1e-6)


def test_mean_average_precision():
  mean_ap = gldv2_metrics.MeanAveragePrecision(_RETRIEVAL_PREDICTIONS, _RETRIEVAL_SOLUTION)
  assert mean_ap == pytest.approx(0.458333, abs=1e-6)
  mean_ap = gldv2_metrics.MeanAveragePrecision(
    _RETRIEVAL_PREDICTIONS, _RETRIEVAL_SOLUTION, max_predictions=1
  )
  assert mean_ap == pytest.approx(0.5)


def test_mean_average_precision_duplicates_use_up_ranks():
  solution = {"q": ["a", "b"]}
  # "a" at rank 1, duplicate "a" at rank 2 skipped, "b" at rank 3: (1/1 + 2/3) / 2.
  assert gldv2_metrics.MeanAveragePrecision({"q": ["a", "a", "b"]}, solution) == pytest.approx(
    (1 + 2 / 3) / 2
  )


def test_mean_precisions():
  precisions = gldv2_metrics.MeanPrecisions(
    _RETRIEVAL_PREDICTIONS, _RETRIEVAL_SOLUTION, max_predictions=2
  )
  np.testing.assert_allclose(precisions, [0.5, 0.375])


def test_mean_median_position():
  mean, median = gldv2_metrics.MeanMedianPosition(_RETRIEVAL_PREDICTIONS, _RETRIEVAL_SOLUTION)
  assert (mean, median) == (pytest.approx(26.25), pytest.approx(1.5))
  mean, median = gldv2_metrics.MeanMedianPosition(
    _RETRIEVAL_PREDICTIONS, _RETRIEVAL_SOLUTION, max_predictions=1
  )
  assert (mean, median) == (pytest.approx(1.5), pytest.approx(1.5))


def test_empty_retrieval_ground_truth_scores_zero_with_warning():
  # KB-57: the reference divided by zero; we count the query as AP 0 and say so.
  solution = {"q1": ["a"], "q2": []}
  predictions = {"q1": ["a"], "q2": ["a"]}
  with pytest.warns(gldv2_metrics.EmptyGroundTruthWarning, match="q2"):
    mean_ap = gldv2_metrics.MeanAveragePrecision(predictions, solution)
  assert mean_ap == pytest.approx(0.5)


def test_prediction_outside_solution_is_rejected():
  with pytest.raises(ValueError, match="zzz"):
    gldv2_metrics.MeanAveragePrecision({"zzz": ["a"]}, _RETRIEVAL_SOLUTION)
  with pytest.raises(ValueError, match="zzz"):
    gldv2_metrics.GlobalAveragePrecision({"zzz": {"class": 1, "score": 1.0}}, _RECOGNITION_SOLUTION)
