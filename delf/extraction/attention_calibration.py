"""Attention-score statistics of a model, to choose ``score_threshold`` (KB-58).

``score_threshold`` in a ``DelfConfig`` is compared with the model's raw attention
scores (softplus outputs, unbounded), whose scale depends on the model and its training:
the released models use 100-455, a briefly trained one may stay below 1. This runs the
configured model on a sample of images with every cell kept, and prints the score
distribution and, for several feature budgets, the threshold that would keep about
that many features per image.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from delf.extraction import config_io
from delf.extraction.extract_features import read_image_list
from delf.extraction.image_io import RgbLoader

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)
BUDGETS = (100, 500, 1000)


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
  config_path: str
  list_images_path: str
  max_images: int = 20


@dataclasses.dataclass
class CalibrationReport:
  """Scores per image (descending) and the derived statistics."""

  scores_per_image: list[np.ndarray]
  percentiles: dict[int, float]
  threshold_for_budget: dict[int, float]
  current_threshold: float
  mean_kept_at_current: float


def threshold_keeping(scores_descending: np.ndarray, budget: int) -> float:
  """A threshold that keeps at most ``budget`` cells of one image (0 keeps all).

  Halfway between the last kept and the first dropped score, so that the printed
  value still works when rounded; just above a tie at the boundary.
  """
  if len(scores_descending) <= budget:
    return 0.0
  last_kept = np.float32(scores_descending[budget - 1]) if budget > 0 else np.float32(np.inf)
  first_dropped = np.float32(scores_descending[budget])
  if last_kept > first_dropped and np.isfinite(last_kept):
    return float((last_kept + first_dropped) / 2)
  return float(np.nextafter(first_dropped, np.float32(np.inf)))


def summarize(
  scores_per_image: list[np.ndarray], current_threshold: float, max_feature_num: int
) -> CalibrationReport:
  """Percentiles over all cells; per-budget thresholds as the median over images."""
  scores_per_image = [np.sort(np.asarray(s, np.float32))[::-1] for s in scores_per_image]
  every_score = np.concatenate(scores_per_image) if scores_per_image else np.zeros([0])
  if not every_score.size:
    raise ValueError("no attention score: the images gave no feature-map cell")
  percentiles = {p: float(np.percentile(every_score, p)) for p in PERCENTILES}
  budgets = sorted({*BUDGETS, max_feature_num})
  thresholds = {
    budget: float(np.median([threshold_keeping(s, budget) for s in scores_per_image]))
    for budget in budgets
  }
  kept = [
    min(int(np.count_nonzero(s >= current_threshold)), max_feature_num) for s in scores_per_image
  ]
  return CalibrationReport(
    scores_per_image=scores_per_image,
    percentiles=percentiles,
    threshold_for_budget=thresholds,
    current_threshold=current_threshold,
    mean_kept_at_current=float(np.mean(kept)),
  )


def format_report(report: CalibrationReport, config_path: str) -> str:
  num_cells = sum(len(s) for s in report.scores_per_image)
  lines = [
    f"Attention scores of {len(report.scores_per_image)} images "
    f"({num_cells} feature-map cells over all pyramid scales):",
    "  " + "  ".join(f"p{p}={v:.4g}" for p, v in report.percentiles.items()),
    "score_threshold that keeps about N features per image (median over the images):",
  ]
  lines += [f"  N={n}: {t:.4g}" for n, t in report.threshold_for_budget.items()]
  lines.append(
    f"The current score_threshold {report.current_threshold:g} of {config_path} keeps "
    f"{report.mean_kept_at_current:.1f} features per image on average."
  )
  return "\n".join(lines)


def calibrate_attention(config: CalibrationConfig) -> CalibrationReport:
  """Runs the configured model on up to ``max_images`` listed images and prints the report."""
  delf_config = config_io.read_delf_config(config.config_path)
  if not delf_config.use_local_features:
    raise ValueError(f"{config.config_path}: use_local_features is false: no attention to measure")
  paths = read_image_list(config.list_images_path)[: config.max_images]
  if not paths:
    raise ValueError(f"{config.list_images_path}: no image listed")

  from delf.extraction import extractor as extractor_lib  # Imports TensorFlow.

  extractor = extractor_lib.MakeExtractor(delf_config)
  scores = []
  for path in paths:
    try:
      resized, _ = extractor.prepare(np.array(RgbLoader(path)))
    except Exception as e:  # Report and go on, as extraction does (KB-41).
      print(f"Error: cannot read image {path}: {e}", file=sys.stderr)
      continue
    scores.append(extractor.attention_scores(resized))
  local = delf_config.delf_local_config
  report = summarize(scores, local.score_threshold, local.max_feature_num)
  print(format_report(report, config.config_path))
  return report
