"""The demo revisited-format benchmark: files, ground truth round trip, query boxes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from delf.retrieval import demo_benchmark, revisited
from tests import cli_harness

run_script = cli_harness.run_script


def test_make_demo_benchmark_script(tmp_path, capsys):
  run_script(
    "make_demo_benchmark",
    [
      f"--output_dir={tmp_path}",
      "--name=tiny",
      "--num_landmarks=2",
      "--queries_per_landmark=1",
      "--num_distractors=2",
      "--image_height=96",
      "--image_width=128",
    ],
  )
  assert "Wrote 2 queries and 12 index images" in capsys.readouterr().out
  query_list, index_list, ground_truth = revisited.ReadDatasetFile(str(tmp_path / "gnd_tiny.mat"))
  assert query_list == ["query_00_0", "query_01_0"]
  assert len(index_list) == 2 * 5 + 2
  for name in query_list + index_list:
    with Image.open(tmp_path / "images" / f"{name}.jpg") as image:
      assert image.size == (128, 96)
  # Landmark k's index views: 2 easy, 2 hard, 1 junk; distractors are in no list.
  for k, entry in enumerate(ground_truth):
    np.testing.assert_array_equal(entry["easy"], [5 * k, 5 * k + 1])
    np.testing.assert_array_equal(entry["hard"], [5 * k + 2, 5 * k + 3])
    np.testing.assert_array_equal(entry["junk"], [5 * k + 4])
    x1, y1, x2, y2 = entry["bbx"]
    assert 0 <= x1 < x2 <= 127 and 0 <= y1 < y2 <= 95
    assert (x2 - x1) * (y2 - y1) > 0.2 * 96 * 128  # The landmark fills much of the view.
  json_result = revisited.ReadDatasetFile(str(tmp_path / "gnd_tiny.json"))
  assert json_result[:2] == (query_list, index_list)
  for a, b in zip(json_result[2], ground_truth, strict=True):
    for key in ("easy", "hard", "junk", "bbx"):
      np.testing.assert_array_equal(a[key], b[key])


def test_same_seed_gives_the_same_benchmark(tmp_path):
  info = demo_benchmark.make_demo_benchmark(
    str(tmp_path), num_landmarks=1, queries_per_landmark=1, easy_per_landmark=0,
    hard_per_landmark=0, junk_per_landmark=0, num_distractors=0, image_size=(96, 128), seed=3,
  )  # fmt: skip
  again = demo_benchmark.make_demo_benchmark(
    str(tmp_path / "again"), num_landmarks=1, queries_per_landmark=1, easy_per_landmark=0,
    hard_per_landmark=0, junk_per_landmark=0, num_distractors=0, image_size=(96, 128), seed=3,
  )  # fmt: skip
  np.testing.assert_array_equal(info.ground_truth[0]["bbx"], again.ground_truth[0]["bbx"])
  assert (tmp_path / "gnd_demo.json").read_text() == (tmp_path / "again/gnd_demo.json").read_text()
