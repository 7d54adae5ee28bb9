"""Plain-text (CSV) dumps of feature files, for users who cannot read protobuf.

``.delf`` / ``.delg_local`` files become one row per feature: ``y,x,scale,attention,
orientation,d0,...,d{D-1}`` — locations in (y, x) order (row, column; KB-42), scale =
1 / image-pyramid scale (KB-37), orientation always 0 for DELF. ``.delg_global`` /
``.datum`` files (one ``DatumProto``) become rows of values (one row for a 1-D
descriptor). Values are written with float32 precision (``repr`` of the stored float).
"""

from __future__ import annotations

import csv
import os

import numpy as np

from delf import atomic_io, datum_io, feature_io

LOCAL_EXTENSIONS = (".delf", ".delg_local")
DATUM_EXTENSIONS = (".delg_global", ".datum", ".global")


def _text(value: float) -> str:
  return repr(float(np.float32(value)))


def dump_features_csv(input_path: str, output_path: str) -> int:
  """Writes ``input_path`` (a local-feature or datum file) as CSV; returns the row count."""
  extension = os.path.splitext(input_path)[1].lower()
  if extension in LOCAL_EXTENSIONS:
    locations, scales, descriptors, attention, orientations = feature_io.ReadFromFile(input_path)
    dim = descriptors.shape[1] if descriptors.ndim == 2 else 0
    header = ["y", "x", "scale", "attention", "orientation"] + [f"d{i}" for i in range(dim)]
    rows = [
      [*(_text(v) for v in (loc[0], loc[1], s, a, o)), *(_text(v) for v in desc)]
      for loc, s, a, o, desc in zip(locations, scales, attention, orientations, descriptors)
    ]  # An empty file reads back as five empty 1-D arrays: no rows.
  elif extension in DATUM_EXTENSIONS:
    array = datum_io.ReadFromFile(input_path)
    matrix = array.reshape(1, -1) if array.ndim <= 1 else array.reshape(array.shape[0], -1)
    header = [f"d{i}" for i in range(matrix.shape[1])]
    rows = [[_text(v) for v in row] for row in matrix]
  else:
    known = ", ".join(LOCAL_EXTENSIONS + DATUM_EXTENSIONS)
    raise ValueError(f"{input_path}: unknown feature file extension (expected one of {known})")
  with atomic_io.atomic_output(output_path, "w") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
  return len(rows)
