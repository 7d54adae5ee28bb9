"""CSV dumps of .delf and DatumProto files (plain-text access to the binary formats)."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from delf import datum_io, feature_dump, feature_io
from tests.cli_harness import run_script


def _read_csv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


def test_local_features_one_row_per_feature(tmp_path):
  locations = np.array([[10.5, 20.0], [3.0, 4.25]])
  descriptors = np.array([[0.6, -0.8], [1.0, 0.0]], dtype=np.float32)
  path = str(tmp_path / "image.delf")
  feature_io.WriteToFile(path, locations, np.array([2.0, 0.5]), descriptors, np.array([150.0, 7.5]))
  assert feature_dump.dump_features_csv(path, str(tmp_path / "image.csv")) == 2
  rows = _read_csv(tmp_path / "image.csv")
  assert rows[0] == ["y", "x", "scale", "attention", "orientation", "d0", "d1"]
  assert [float(v) for v in rows[1]] == [
    10.5,
    20.0,
    2.0,
    150.0,
    0.0,
    float(np.float32(0.6)),
    float(np.float32(-0.8)),
  ]
  assert [float(v) for v in rows[2]] == [3.0, 4.25, 0.5, 7.5, 0.0, 1.0, 0.0]


def test_empty_feature_file_gives_a_header_only(tmp_path):
  path = str(tmp_path / "empty.delf")
  empty = np.array([])
  feature_io.WriteToFile(path, empty, empty, empty, empty)
  assert feature_dump.dump_features_csv(path, str(tmp_path / "empty.csv")) == 0
  assert _read_csv(tmp_path / "empty.csv") == [["y", "x", "scale", "attention", "orientation"]]


def test_global_descriptor_round_trips_through_text(tmp_path):
  descriptor = np.random.default_rng(0).standard_normal(16).astype(np.float32)
  path = str(tmp_path / "q.delg_global")
  datum_io.WriteToFile(descriptor, path)
  run_script("dump_features", [f"--input_path={path}"])
  rows = _read_csv(path + ".csv")
  assert rows[0] == [f"d{i}" for i in range(16)]
  np.testing.assert_array_equal(np.float32([float(v) for v in rows[1]]), descriptor)


def test_unknown_extension_is_one_line(tmp_path):
  path = tmp_path / "features.bin"
  path.write_bytes(b"")
  with pytest.raises(SystemExit, match=r"dump_features: error: .*features\.bin: unknown feature"):
    run_script("dump_features", [f"--input_path={path}"])


def test_reference_file_dump(interop_dir, tmp_path):
  source = str(interop_dir / "delg_local_query_00.delf")
  output = str(tmp_path / "query_00.csv")
  assert feature_dump.dump_features_csv(source, output) == 1000
  rows = _read_csv(output)
  assert len(rows[0]) == 5 + 128
  locations, *_ = feature_io.ReadFromFile(source)
  np.testing.assert_array_equal([float(rows[1][0]), float(rows[1][1])], locations[0])


def test_script_does_not_import_tensorflow():
  code = "import sys, scripts.dump_features; sys.exit('tensorflow' in sys.modules)"
  assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
