"""Prints the closing summary of a demo run: per stage its time and key figure, the
attention accuracy, and the files to open (pictures, metrics, Kaggle CSVs, TensorBoard).

Usage:
  python -m scripts.summarize_demo --demo_dir=demo_output

demo.sh runs it last; it reads only what the steps wrote (``<demo_dir>/logs/``, the
metrics files, the dataset manifest), so it can be rerun at any time. A figure whose
step did not run reads ``n/a``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from delf import cli_flags, demo_summary

_DEMO_DIR = flags.DEFINE_string("demo_dir", "demo_output", "Output folder of demo.sh.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not os.path.isdir(_DEMO_DIR.value):
    print(f"summarize_demo.py: error: no demo output folder {_DEMO_DIR.value}", file=sys.stderr)
    return 1
  print()
  print(demo_summary.format_summary(demo_summary.collect(_DEMO_DIR.value)), end="")
  return 0


if __name__ == "__main__":
  cli_flags.run(main)
