"""Ground-truth files: gnd_*.mat (as ROxford's), the JSON form and the revisitop pickle."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from scipy.io import savemat

from delf.retrieval import demo_benchmark, revisited

_QUERIES = ["q0", "q1"]
_INDEX = ["i0", "i1", "i2", "i3", "i4"]
_GROUND_TRUTH = [
  {"easy": [0, 3], "hard": [1], "junk": [], "bbx": [10.5, 20.25, 100.0, 80.75]},
  {"easy": [], "hard": [4], "junk": [2, 0], "bbx": [0.0, 0.0, 5.0, 6.0]},
]


def _expected():
  return [{k: np.asarray(v) for k, v in entry.items()} for entry in _GROUND_TRUTH]


def _check(result):
  query_list, index_list, ground_truth = result
  assert query_list == _QUERIES
  assert index_list == _INDEX
  assert len(ground_truth) == len(_GROUND_TRUTH)
  for got, expected in zip(ground_truth, _expected(), strict=True):
    assert sorted(got) == ["bbx", "easy", "hard", "junk"]
    for key in ("easy", "hard", "junk"):
      assert got[key].ndim == 1
      np.testing.assert_array_equal(got[key], expected[key])
    assert got["bbx"].shape == (4,)
    np.testing.assert_array_equal(got["bbx"], expected["bbx"])


def test_mat_round_trip(tmp_path):
  path = str(tmp_path / "gnd_test.mat")
  demo_benchmark.SaveGroundTruthMat(path, _QUERIES, _INDEX, _expected())
  _check(revisited.ReadDatasetFile(path))


def test_mat_written_like_matlab(tmp_path):
  # The layout of the distributed gnd_roxford5k.mat: cell arrays and a 1xQ struct array
  # of 1-based double index rows.
  gnd = np.empty((1, 2), dtype=[("bbx", "O"), ("easy", "O"), ("hard", "O"), ("junk", "O")])
  gnd[0, 0] = (
    np.array([[10.5, 20.25, 100.0, 80.75]]),
    np.array([[1.0, 4.0]]),
    np.array([[2.0]]),
    np.zeros((0, 0)),
  )
  gnd[0, 1] = (np.array([[0.0, 0.0, 5.0, 6.0]]), np.zeros((1, 0)), np.array([[5.0]]), [[3.0, 1.0]])
  imlist = np.array([_INDEX], dtype=object)
  qimlist = np.array([_QUERIES], dtype=object)
  path = str(tmp_path / "gnd_matlab.mat")
  savemat(path, {"imlist": imlist, "qimlist": qimlist, "gnd": gnd})
  _check(revisited.ReadDatasetFile(path))


def test_json_form(tmp_path):
  path = tmp_path / "gnd.json"
  demo_benchmark.SaveGroundTruthJson(str(path), _QUERIES, _INDEX, _expected())
  _check(revisited.ReadDatasetFile(str(path)))
  # 1-based indices (copied from a .mat) are accepted when declared.
  content = json.loads(path.read_text())
  content["index_base"] = 1
  for entry in content["gnd"]:
    for key in ("easy", "hard", "junk"):
      entry[key] = [v + 1 for v in entry[key]]
  path.write_text(json.dumps(content))
  _check(revisited.ReadDatasetFile(str(path)))


def test_pickle_form(tmp_path):
  path = tmp_path / "gnd_roxford5k.pkl"
  with open(path, "wb") as f:
    pickle.dump({"imlist": _INDEX, "qimlist": _QUERIES, "gnd": _GROUND_TRUTH}, f)
  _check(revisited.ReadDatasetFile(str(path)))


def test_json_without_box_uses_whole_image(tmp_path):
  path = tmp_path / "gnd.json"
  path.write_text(
    json.dumps(
      {"index_base": 0, "imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": []}]}
    )
  )
  _, _, ground_truth = revisited.ReadDatasetFile(str(path))
  assert "bbx" not in ground_truth[0]
  assert "junk" not in ground_truth[0]  # Only the fields present, like the reference.


@pytest.mark.parametrize(
  "content, message",
  [
    ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [0]}]}, "index_base"),
    ({"index_base": 2, "imlist": ["a"], "qimlist": ["q"], "gnd": [{}]}, "0 or 1"),
    ({"index_base": 0, "imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [1]}]}, "outside"),
    ({"index_base": 1, "imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [0]}]}, "outside"),
    ({"index_base": 0, "imlist": ["a"], "qimlist": ["q", "r"], "gnd": [{}]}, "2 query names"),
    ({"index_base": 0, "imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": "x"}]}, "integers"),
    ({"index_base": 0, "imlist": [], "qimlist": ["q"], "gnd": [{"bbx": [1, 2]}]}, "bbx"),
  ],
)
def test_bad_json(tmp_path, content, message):
  path = tmp_path / "gnd.json"
  path.write_text(json.dumps(content))
  with pytest.raises(revisited.GroundTruthError, match=message) as error:
    revisited.ReadDatasetFile(str(path))
  assert str(path) in str(error.value)


def test_unreadable_files(tmp_path):
  with pytest.raises(revisited.GroundTruthError, match="not found"):
    revisited.ReadDatasetFile(str(tmp_path / "missing.mat"))
  bad = tmp_path / "gnd_bad.mat"
  bad.write_bytes(b"not a mat file")
  with pytest.raises(revisited.GroundTruthError, match=r"gnd_bad\.mat"):
    revisited.ReadDatasetFile(str(bad))
  missing_variable = tmp_path / "gnd_partial.mat"
  savemat(str(missing_variable), {"imlist": np.array([["a"]], dtype=object)})
  with pytest.raises(revisited.GroundTruthError, match="'qimlist' missing"):
    revisited.ReadDatasetFile(str(missing_variable))
