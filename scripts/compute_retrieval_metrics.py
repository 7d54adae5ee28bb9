"""Computes GLDv2 retrieval metrics (mAP@100, mean precisions, mean/median position).

Usage:
  python -m scripts.compute_retrieval_metrics \
    --solution_path=/tmp/solution.csv --predictions_path=/tmp/predictions.csv

The solution CSV has the columns ``id,images,Usage`` (Usage Public, Private
or Ignored); the predictions CSV ``id,images`` with space-separated index ids, best first.
Public and Private results are printed separately.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags
from delf.retrieval import gldv2_report

_PREDICTIONS_PATH = flags.DEFINE_string(
  "predictions_path",
  "/tmp/predictions.csv",
  "Path to the retrieval predictions CSV (columns id,images; "
  "second column = space-separated index ids, best first).",
)
_SOLUTION_PATH = flags.DEFINE_string(
  "solution_path",
  "/tmp/solution.csv",
  "Path to the retrieval solution CSV (columns id,images,Usage).",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  config = gldv2_report.MetricsConfig(
    predictions_path=_PREDICTIONS_PATH.value, solution_path=_SOLUTION_PATH.value
  )
  try:
    gldv2_report.PrintRetrievalMetrics(config)
  except (OSError, ValueError) as e:
    raise SystemExit(f"compute_retrieval_metrics: {e}") from None


if __name__ == "__main__":
  cli_flags.run(main)
