"""GLDv2 CSV readers: the reference test vectors (inference.md §8.8) and KB-57."""

from __future__ import annotations

import pytest

from delf.retrieval import gldv2_io

_ID = "{}23456789abcdef"  # Test ids 0123456789abcdef ... differ in their first two digits.
_IDX = "fedcba98765432{}"


def _write(tmp_path, name, lines):
  path = tmp_path / name
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_read_recognition_solution(tmp_path):
  path = _write(
    tmp_path,
    "solution.csv",
    [
      "id,landmarks,Usage",
      f"{_ID.format('01')},0 12,Public",
      f"{_ID.format('02')},,Public",
      f"{_ID.format('03')},100,Ignored",
      f"{_ID.format('04')},1,Private",
      f"{_ID.format('05')},,Ignored",
    ],
  )
  public, private, ignored = gldv2_io.ReadSolution(path, gldv2_io.RECOGNITION_TASK_ID)
  assert public == {_ID.format("01"): [0, 12], _ID.format("02"): []}
  assert private == {_ID.format("04"): [1]}
  assert ignored == [_ID.format("03"), _ID.format("05")]


def test_read_retrieval_solution(tmp_path):
  path = _write(
    tmp_path,
    "solution.csv",
    [
      "id,images,Usage",
      f"{_ID.format('01')},None,Ignored",
      f"{_ID.format('02')},{_IDX.format('10')} {_IDX.format('00')},Public",
      f"{_ID.format('03')},{_IDX.format('00')},Private",
      f"{_ID.format('04')},{_IDX.format('20')},Private",
      f"{_ID.format('05')},None,Ignored",
    ],
  )
  public, private, ignored = gldv2_io.ReadSolution(path, gldv2_io.RETRIEVAL_TASK_ID)
  assert public == {_ID.format("02"): [_IDX.format("10"), _IDX.format("00")]}
  assert private == {_ID.format("03"): [_IDX.format("00")], _ID.format("04"): [_IDX.format("20")]}
  assert ignored == [_ID.format("01"), _ID.format("05")]


def test_empty_retrieval_ground_truth_cell_is_empty_list(tmp_path):
  # KB-57: the reference gave [''].
  path = _write(tmp_path, "solution.csv", ["id,images,Usage", "q,,Public"])
  public, _, _ = gldv2_io.ReadSolution(path, gldv2_io.RETRIEVAL_TASK_ID)
  assert public == {"q": []}


def test_read_recognition_predictions(tmp_path):
  path = _write(
    tmp_path,
    "predictions.csv",
    [
      "id,landmarks",
      f"{_ID.format('01')},12 0.1 ",
      f"{_ID.format('04')},0 19.0",
      f"{_ID.format('02')},",
      "",
      f"{_ID.format('05')},14 0.01",
    ],
  )
  public, private = gldv2_io.ReadPredictions(
    path,
    [_ID.format("01"), _ID.format("02")],
    [_ID.format("04")],
    [_ID.format("03"), _ID.format("05")],
    gldv2_io.RECOGNITION_TASK_ID,
  )
  assert public == {_ID.format("01"): {"class": 12, "score": 0.1}}
  assert private == {_ID.format("04"): {"class": 0, "score": 19.0}}


def test_read_retrieval_predictions(tmp_path):
  path = _write(
    tmp_path,
    "predictions.csv",
    [
      "id,images",
      f"{_ID.format('01')},{_IDX.format('50')} ",
      f"{_ID.format('04')},{_IDX.format('60')}",
      f"{_ID.format('02')},{_IDX.format('10')} {_IDX.format('00')} {_IDX.format('20')}",
      "",
      f"{_ID.format('05')},",
    ],
  )
  public, private = gldv2_io.ReadPredictions(
    path,
    [_ID.format("02")],
    [_ID.format("03"), _ID.format("04")],
    [_ID.format("01"), _ID.format("05")],
    gldv2_io.RETRIEVAL_TASK_ID,
  )
  assert public == {_ID.format("02"): [_IDX.format("10"), _IDX.format("00"), _IDX.format("20")]}
  assert private == {_ID.format("04"): [_IDX.format("60")]}


@pytest.mark.parametrize(
  "rows",
  [
    ["a,1 0.5", "a,2 0.5"],  # Repeated stored prediction (the reference caught this one).
    ["i,1 0.5", "i,2 0.5"],  # Repeated ignored id (KB-57).
    ["a,", "a,"],  # Repeated empty prediction (KB-57).
    ["a,", "a,1 0.5"],
  ],
)
def test_any_repeated_prediction_id_is_an_error(tmp_path, rows):
  path = _write(tmp_path, "predictions.csv", ["id,landmarks", *rows])
  with pytest.raises(ValueError, match="repeated"):
    gldv2_io.ReadPredictions(path, ["a"], [], ["i"], gldv2_io.RECOGNITION_TASK_ID)


def test_repeated_solution_id_is_an_error(tmp_path):
  path = _write(tmp_path, "solution.csv", ["id,landmarks,Usage", "a,1,Public", "a,,Ignored"])
  with pytest.raises(ValueError, match="repeated"):
    gldv2_io.ReadSolution(path, gldv2_io.RECOGNITION_TASK_ID)


def test_bad_inputs(tmp_path):
  predictions = _write(tmp_path, "p.csv", ["id,landmarks", "zzz,1 0.5"])
  with pytest.raises(ValueError, match="unrecognized"):
    gldv2_io.ReadPredictions(predictions, ["a"], [], [], gldv2_io.RECOGNITION_TASK_ID)
  predictions = _write(tmp_path, "p.csv", ["id,landmarks", "a,1 0.5 3"])
  with pytest.raises(ValueError, match="2 elements"):
    gldv2_io.ReadPredictions(predictions, ["a"], [], [], gldv2_io.RECOGNITION_TASK_ID)
  solution = _write(tmp_path, "s.csv", ["id,landmarks,Usage", "a,1,Secret"])
  with pytest.raises(ValueError, match=r"s\.csv:2: .*unrecognized Usage tag Secret"):
    gldv2_io.ReadSolution(solution, gldv2_io.RECOGNITION_TASK_ID)
  with pytest.raises(ValueError, match="Unrecognized task"):
    gldv2_io.ReadSolution(solution, "classification")
  with pytest.raises(ValueError, match="Unrecognized task"):
    gldv2_io.ReadPredictions(predictions, [], [], [], "classification")
