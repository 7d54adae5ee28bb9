"""Computes GLDv2 recognition metrics (GAP, GAP ignoring non-landmarks, top-1 accuracy).

Usage:
  python -m scripts.compute_recognition_metrics \
    --solution_path=/tmp/solution.csv --predictions_path=/tmp/predictions.csv

The solution CSV has the columns ``id,landmarks,Usage`` (Usage Public, Private
or Ignored); the predictions CSV ``id,landmarks`` with ``"<landmark_id> <score>"``.
Public and Private results are printed separately.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags
from delf.retrieval import gldv2_report

_PREDICTIONS_PATH = flags.DEFINE_string(
  "predictions_path",
  "/tmp/predictions.csv",
  "Path to the recognition predictions CSV (columns id,landmarks; "
  'second column "<landmark_id> <score>").',
)
_SOLUTION_PATH = flags.DEFINE_string(
  "solution_path",
  "/tmp/solution.csv",
  "Path to the recognition solution CSV (columns id,landmarks,Usage).",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  config = gldv2_report.MetricsConfig(
    predictions_path=_PREDICTIONS_PATH.value, solution_path=_SOLUTION_PATH.value
  )
  try:
    gldv2_report.PrintRecognitionMetrics(config)
  except (OSError, ValueError) as e:
    raise SystemExit(f"compute_recognition_metrics: {e}") from None


if __name__ == "__main__":
  cli_flags.run(main)
