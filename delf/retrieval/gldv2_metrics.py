"""Google Landmarks v2 challenge metrics (inference.md §7.2), Kaggle conventions kept.

Recognition predictions map a test id to ``{"class": int, "score": float}``;
retrieval predictions map a test id to a list of index ids, best first.
Solutions map a test id to its ground-truth list (possibly empty).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np


class EmptyGroundTruthWarning(UserWarning):
  """A retrieval query without ground truth: it scores AP 0 (KB-57)."""


def _CheckKnown(predictions: Mapping, solution: Mapping) -> None:
  if not solution:
    raise ValueError("The solution is empty; the metric is undefined")
  for key in predictions:
    if key not in solution:
      raise ValueError(f"Test image {key} is not part of the solution")


def GlobalAveragePrecision(
  predictions: Mapping[str, Mapping],
  recognition_solution: Mapping[str, Sequence[int]],
  ignore_non_gt_test_images: bool = False,
) -> float:
  """Global Average Precision (micro AP over all predictions ranked by score).

  Predictions are sorted by score (descending), ties by id then class
  (ascending). With ``ignore_non_gt_test_images`` predictions for test images
  without ground truth are skipped. The sum is divided by the number of test
  images that have ground truth.
  """
  _CheckKnown(predictions, recognition_solution)
  num_positives = sum(1 for ground_truth in recognition_solution.values() if ground_truth)
  if not num_positives:
    raise ValueError("The solution has no test image with ground truth; GAP is undefined")
  by_key_class = sorted(predictions.items(), key=lambda item: (item[0], item[1]["class"]))
  ordered = sorted(by_key_class, key=lambda item: item[1]["score"], reverse=True)  # Stable.
  gap = 0.0
  total = 0
  correct = 0
  for key, prediction in ordered:
    if ignore_non_gt_test_images and not recognition_solution[key]:
      continue
    total += 1
    if prediction["class"] in recognition_solution[key]:
      correct += 1
      gap += correct / total
  return gap / num_positives


def Top1Accuracy(
  predictions: Mapping[str, Mapping], recognition_solution: Mapping[str, Sequence[int]]
) -> float:
  """Fraction of test images with ground truth whose predicted class is correct."""
  _CheckKnown(predictions, recognition_solution)
  num_correct = 0
  num_with_ground_truth = 0
  for key, ground_truth in recognition_solution.items():
    if not ground_truth:
      continue
    num_with_ground_truth += 1
    if key in predictions and predictions[key]["class"] in ground_truth:
      num_correct += 1
  if not num_with_ground_truth:
    raise ValueError("The solution has no test image with ground truth; accuracy is undefined")
  return num_correct / num_with_ground_truth


def MeanAveragePrecision(
  predictions: Mapping[str, Sequence[str]],
  retrieval_solution: Mapping[str, Sequence[str]],
  max_predictions: int = 100,
) -> float:
  """mAP@max_predictions over all solution queries (unpredicted queries count as 0).

  Duplicated predictions are skipped but use up a rank. A query whose ground
  truth is empty scores 0 and counts in the denominator, with an
  ``EmptyGroundTruthWarning`` naming it (KB-57; the reference divided by zero).
  """
  _CheckKnown(predictions, retrieval_solution)
  num_test_images = len(retrieval_solution)
  mean_ap = 0.0
  for key, prediction in predictions.items():
    ground_truth = retrieval_solution[key]
    num_expected = min(len(ground_truth), max_predictions)
    if not num_expected:
      warnings.warn(
        f"Test image {key} has an empty retrieval ground truth; its AP counts as 0",
        EmptyGroundTruthWarning,
        stacklevel=2,
      )
      continue
    ground_truth = set(ground_truth)
    ap = 0.0
    already_predicted: set[str] = set()
    num_correct = 0
    for i in range(min(len(prediction), max_predictions)):
      if prediction[i] not in already_predicted:
        if prediction[i] in ground_truth:
          num_correct += 1
          ap += num_correct / (i + 1)
        already_predicted.add(prediction[i])
    mean_ap += ap / num_expected
  return mean_ap / num_test_images


def MeanPrecisions(
  predictions: Mapping[str, Sequence[str]],
  retrieval_solution: Mapping[str, Sequence[str]],
  max_predictions: int = 100,
) -> np.ndarray:
  """Mean precision@k for k = 1..max_predictions (unpredicted queries are all-zero rows)."""
  _CheckKnown(predictions, retrieval_solution)
  precisions = np.zeros((len(retrieval_solution), max_predictions))
  for row, (key, prediction) in enumerate(predictions.items()):
    ground_truth = set(retrieval_solution[key])
    already_predicted: set[str] = set()
    num_correct = 0
    for i in range(max_predictions):
      if i < len(prediction) and prediction[i] not in already_predicted:
        if prediction[i] in ground_truth:
          num_correct += 1
        already_predicted.add(prediction[i])
      precisions[row, i] = num_correct / (i + 1)
  return np.mean(precisions, axis=0)


def MeanMedianPosition(
  predictions: Mapping[str, Sequence[str]],
  retrieval_solution: Mapping[str, Sequence[str]],
  max_predictions: int = 100,
) -> tuple[float, float]:
  """Mean and median 1-based position of the first correct prediction.

  A query with no correct prediction in the first ``max_predictions`` (or no
  prediction at all) counts as ``max_predictions + 1``.
  """
  _CheckKnown(predictions, retrieval_solution)
  positions = (max_predictions + 1) * np.ones(len(retrieval_solution))
  for row, (key, prediction) in enumerate(predictions.items()):
    ground_truth = set(retrieval_solution[key])
    for i in range(min(len(prediction), max_predictions)):
      if prediction[i] in ground_truth:
        positions[row] = i + 1
        break
  return float(np.mean(positions)), float(np.median(positions))
