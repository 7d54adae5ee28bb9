"""Writes a feature file as CSV (plain text), for inspection or other tools.

Usage:
  python scripts/dump_features.py --input_path=test_features/image_1.delf [--output_path=image_1.csv]

Local features (.delf, .delg_local): one row per feature with the columns
y,x,scale,attention,orientation,d0..d{D-1}; locations are (y, x) = (row, column) in the
original image, scale = 1 / image-pyramid scale, orientation is always 0.
Global descriptors and other DatumProto files (.delg_global, .datum): one row of values
(one row per leading index for matrices). Does not need TensorFlow.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags, feature_dump

_INPUT_PATH = flags.DEFINE_string(
  "input_path", None, "Feature file: .delf / .delg_local (local) or .delg_global / .datum."
)
_OUTPUT_PATH = flags.DEFINE_string(
  "output_path", None, "CSV file to write (default: the input path with .csv appended)."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not _INPUT_PATH.value:
    raise app.UsageError("--input_path is required")
  output_path = _OUTPUT_PATH.value or _INPUT_PATH.value + ".csv"
  try:
    num_rows = feature_dump.dump_features_csv(_INPUT_PATH.value, output_path)
  except (OSError, ValueError) as e:
    raise SystemExit(f"dump_features: error: {e}") from None
  print(f"Wrote {num_rows} rows to {output_path}")
  return 0


if __name__ == "__main__":
  cli_flags.run(main)
