"""The GLDv2 metric reports printed by the two ``compute_*_metrics`` scripts (§7.3).

The printed lines are an interface (scripts parse them): note the two spaces
after ``(Public)`` so that the values align with ``(Private)``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import TextIO

import numpy as np

from delf.retrieval import gldv2_io, gldv2_metrics

_SEPARATOR = "*" * 46


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
  """Inputs of a GLDv2 metrics computation."""

  predictions_path: str = "/tmp/predictions.csv"
  solution_path: str = "/tmp/solution.csv"


def _Metric(function, predictions, solution, *args, empty=math.nan):
  """Runs a metric; an empty subset (e.g. no Private rows) gives ``empty`` (NaN)."""
  if not solution:
    return empty
  return function(predictions, solution, *args)


def _ReadFiles(config: MetricsConfig, task: str, out: TextIO):
  print("Reading solution...", file=out)
  public_solution, private_solution, ignored_ids = gldv2_io.ReadSolution(config.solution_path, task)
  print("done!", file=out)
  print("Reading predictions...", file=out)
  public_predictions, private_predictions = gldv2_io.ReadPredictions(
    config.predictions_path, public_solution.keys(), private_solution.keys(), ignored_ids, task
  )
  print("done!", file=out)
  return public_solution, private_solution, public_predictions, private_predictions


def PrintRecognitionMetrics(config: MetricsConfig, out: TextIO | None = None) -> dict:
  """Computes and prints GAP, GAP ignoring non-landmark queries and top-1 accuracy.

  Returns:
    The computed values, keyed ``public_gap``, ``private_gap``,
    ``public_gap_ignoring_non_gt``, ``private_gap_ignoring_non_gt``,
    ``public_top1``, ``private_top1`` (fractions, not percentages).
  """
  out = out or sys.stdout
  public_solution, private_solution, public_predictions, private_predictions = _ReadFiles(
    config, gldv2_io.RECOGNITION_TASK_ID, out
  )
  gap = gldv2_metrics.GlobalAveragePrecision
  top1 = gldv2_metrics.Top1Accuracy
  results = {
    "public_gap": _Metric(gap, public_predictions, public_solution),
    "private_gap": _Metric(gap, private_predictions, private_solution),
    "public_gap_ignoring_non_gt": _Metric(gap, public_predictions, public_solution, True),
    "private_gap_ignoring_non_gt": _Metric(gap, private_predictions, private_solution, True),
    "public_top1": _Metric(top1, public_predictions, public_solution),
    "private_top1": _Metric(top1, private_predictions, private_solution),
  }
  r = results
  lines = [
    _SEPARATOR,
    f"(Public)  Global Average Precision: {r['public_gap']:f}",
    f"(Private) Global Average Precision: {r['private_gap']:f}",
    _SEPARATOR,
    "(Public)  Global Average Precision ignoring non-landmark queries: "
    f"{r['public_gap_ignoring_non_gt']:f}",
    "(Private) Global Average Precision ignoring non-landmark queries: "
    f"{r['private_gap_ignoring_non_gt']:f}",
    _SEPARATOR,
    f"(Public)  Top-1 accuracy: {100.0 * r['public_top1']:.2f}",
    f"(Private) Top-1 accuracy: {100.0 * r['private_top1']:.2f}",
  ]
  print("\n".join(lines), file=out)
  return results


def PrintRetrievalMetrics(config: MetricsConfig, out: TextIO | None = None) -> dict:
  """Computes and prints mAP@100, mean P@{1,5,10,50,100} and mean/median position.

  Returns:
    The computed values, keyed ``public_map``, ``private_map``,
    ``public_precisions``, ``private_precisions`` (arrays of 100),
    ``public_position``, ``private_position`` ((mean, median) pairs).
  """
  out = out or sys.stdout
  public_solution, private_solution, public_predictions, private_predictions = _ReadFiles(
    config, gldv2_io.RETRIEVAL_TASK_ID, out
  )
  mean_ap = gldv2_metrics.MeanAveragePrecision
  precisions = gldv2_metrics.MeanPrecisions
  position = gldv2_metrics.MeanMedianPosition
  no_precisions = np.full(100, math.nan)
  no_position = (math.nan, math.nan)
  results = {
    "public_map": _Metric(mean_ap, public_predictions, public_solution),
    "private_map": _Metric(mean_ap, private_predictions, private_solution),
    "public_precisions": _Metric(
      precisions, public_predictions, public_solution, empty=no_precisions
    ),
    "private_precisions": _Metric(
      precisions, private_predictions, private_solution, empty=no_precisions
    ),
    "public_position": _Metric(position, public_predictions, public_solution, empty=no_position),
    "private_position": _Metric(position, private_predictions, private_solution, empty=no_position),
  }

  def precisions_line(tag: str, precisions) -> str:
    p1, p5, p10, p50, p100 = (100.0 * precisions[k - 1] for k in (1, 5, 10, 50, 100))
    return (
      f"{tag} Mean precisions: P@1: {p1:.2f}, P@5: {p5:.2f}, P@10: {p10:.2f}, "
      f"P@50: {p50:.2f}, P@100: {p100:.2f}"
    )

  def position_line(tag: str, position) -> str:
    return f"{tag} Mean position: {position[0]:.2f}, median position: {position[1]:.2f}"

  r = results
  lines = [
    _SEPARATOR,
    f"(Public)  Mean Average Precision: {r['public_map']:f}",
    f"(Private) Mean Average Precision: {r['private_map']:f}",
    _SEPARATOR,
    precisions_line("(Public) ", r["public_precisions"]),
    precisions_line("(Private)", r["private_precisions"]),
    _SEPARATOR,
    position_line("(Public) ", r["public_position"]),
    position_line("(Private)", r["private_position"]),
  ]
  print("\n".join(lines), file=out)
  return results
