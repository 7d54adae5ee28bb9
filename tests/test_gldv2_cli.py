"""The GLDv2 metric scripts, run in-process: exact printed text (inference.md §7.3)."""

from __future__ import annotations

import pytest

from tests import cli_harness

run_script = cli_harness.run_script

_STARS = "*" * 46


def _write(path, lines):
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_compute_recognition_metrics_output(tmp_path, capsys):
  solution = _write(
    tmp_path / "solution.csv",
    [
      "id,landmarks,Usage",
      "0123456789abcdef,0 12,Public",
      "0223456789abcdef,100 200 300,Public",
      "0323456789abcdef,1,Public",
      "0423456789abcdef,,Public",
      "0523456789abcdef,,Public",
      "0623456789abcdef,7,Private",
      "0723456789abcdef,,Ignored",
    ],
  )
  predictions = _write(
    tmp_path / "predictions.csv",
    [
      "id,landmarks",
      "0223456789abcdef,0 0.01",
      "0323456789abcdef,1 10.0",
      "0423456789abcdef,150 15.0",
      "0623456789abcdef,7 0.5",
      "0723456789abcdef,3 0.9",
    ],
  )
  run_script(
    "compute_recognition_metrics",
    [f"--solution_path={solution}", f"--predictions_path={predictions}"],
  )
  # Public: the §8.7 vectors; Private: one correct prediction.
  assert capsys.readouterr().out == "\n".join(
    [
      "Reading solution...",
      "done!",
      "Reading predictions...",
      "done!",
      _STARS,
      "(Public)  Global Average Precision: 0.166667",
      "(Private) Global Average Precision: 1.000000",
      _STARS,
      "(Public)  Global Average Precision ignoring non-landmark queries: 0.333333",
      "(Private) Global Average Precision ignoring non-landmark queries: 1.000000",
      _STARS,
      "(Public)  Top-1 accuracy: 33.33",
      "(Private) Top-1 accuracy: 100.00",
      "",
    ]
  )


def test_compute_retrieval_metrics_output(tmp_path, capsys):
  solution = _write(
    tmp_path / "solution.csv",
    [
      "id,images,Usage",
      "0123456789abcdef,fedcba9876543210 fedcba9876543220,Public",
      "0223456789abcdef,fedcba9876543210,Public",
      "0323456789abcdef,fedcba9876543230 fedcba9876543240 fedcba9876543250,Public",
      "0423456789abcdef,fedcba9876543230,Public",
      "0623456789abcdef,aaaa bbbb,Private",
      "0723456789abcdef,None,Ignored",
    ],
  )
  predictions = _write(
    tmp_path / "predictions.csv",
    [
      "id,images",
      "0223456789abcdef,fedcba9876543200 fedcba9876543210",
      "0323456789abcdef,fedcba9876543240",
      "0423456789abcdef,fedcba9876543230 fedcba9876543240",
      "0623456789abcdef,cccc bbbb aaaa",
      "0723456789abcdef,aaaa",
    ],
  )
  run_script(
    "compute_retrieval_metrics",
    [f"--solution_path={solution}", f"--predictions_path={predictions}"],
  )
  # Hand-computed. Public: three predicted queries with one hit each (at rank 2, 1, 1) and
  # one unpredicted query, so P@1 = 2/4 and P@k = 3 * (1/k) / 4 for k >= 2.
  # Private: hits at ranks 2 and 3 -> AP (1/2 + 2/3) / 2; P@5 = 2/5; first hit at 2.
  assert capsys.readouterr().out == "\n".join(
    [
      "Reading solution...",
      "done!",
      "Reading predictions...",
      "done!",
      _STARS,
      "(Public)  Mean Average Precision: 0.458333",
      "(Private) Mean Average Precision: 0.583333",
      _STARS,
      "(Public)  Mean precisions: P@1: 50.00, P@5: 15.00, P@10: 7.50, P@50: 1.50, P@100: 0.75",
      "(Private) Mean precisions: P@1: 0.00, P@5: 40.00, P@10: 20.00, P@50: 4.00, P@100: 2.00",
      _STARS,
      "(Public)  Mean position: 26.25, median position: 1.50",
      "(Private) Mean position: 2.00, median position: 2.00",
      "",
    ]
  )


def test_bad_input_is_one_line_error(tmp_path):
  solution = _write(tmp_path / "solution.csv", ["id,images,Usage", "a,b,Public"])
  predictions = _write(tmp_path / "predictions.csv", ["id,images", "a,b", "a,c"])
  with pytest.raises(
    SystemExit, match=r"compute_retrieval_metrics: .*predictions\.csv:3: .*repeated"
  ):
    run_script(
      "compute_retrieval_metrics",
      [f"--solution_path={solution}", f"--predictions_path={predictions}"],
    )
  with pytest.raises(SystemExit, match=r"missing\.csv"):
    run_script(
      "compute_recognition_metrics",
      [f"--solution_path={tmp_path / 'missing.csv'}", f"--predictions_path={predictions}"],
    )
