"""metrics.txt writer and reader (inference.md §5.4, §5.5, §8.6; KB-55)."""

from __future__ import annotations

import numpy as np
import pytest

from delf.retrieval import metrics_file

_EXPECTED = (
  "hard\n"
  "  mAP=70.0\n"
  "  mP@k[1 5] [100.  80.]\n"
  "  mR@k[1 5] [50. 80.]\n"
  "medium\n"
  "  mAP=90.0\n"
  "  mP@k[1 5] [100. 100.]\n"
  "  mR@k[1 5] [ 50. 100.]\n"
)

_MAP = {"hard": 0.7, "medium": 0.9}
_PRECISIONS = {"hard": np.array([1.0, 0.8]), "medium": np.array([1, 1])}
_RECALLS = {"hard": np.array([0.5, 0.8]), "medium": np.array([0.5, 1.0])}


def test_save_metrics_file_exact_bytes(tmp_path):
  path = tmp_path / "metrics.txt"
  metrics_file.SaveMetricsFile(_MAP, _PRECISIONS, _RECALLS, [1, 5], str(path))
  assert path.read_bytes() == _EXPECTED.encode()


def test_format_ignores_global_print_options():
  # Another module changing NumPy's print options must not change the file (KB-55).
  with np.printoptions(precision=3, floatmode="fixed", linewidth=10, sign="+"):
    text = metrics_file.FormatMetrics(_MAP, _PRECISIONS, _RECALLS, [1, 5])
  assert text == _EXPECTED


def test_reference_documentation_formatting():
  # The spacing of the numbers printed in the DELG instructions (inference.md §5.5).
  text = metrics_file.FormatMetrics(
    {"hard": 0.451123, "medium": 0.69714},
    {"hard": [0.857142, 0.722857, 0.601428], "medium": [0.957142, 0.92, 0.868571]},
    {"hard": [0.19153, 0.29721, 0.36318], "medium": [0.10172, 0.25938, 0.33826]},
    (1, 5, 10),
  )
  assert text == (
    "hard\n"
    "  mAP=45.11\n"
    "  mP@k[ 1  5 10] [85.71 72.29 60.14]\n"
    "  mR@k[ 1  5 10] [19.15 29.72 36.32]\n"
    "medium\n"
    "  mAP=69.71\n"
    "  mP@k[ 1  5 10] [95.71 92.   86.86]\n"
    "  mR@k[ 1  5 10] [10.17 25.94 33.83]\n"
  )


def test_round_trip(tmp_path):
  path = tmp_path / "metrics.txt"
  metrics_file.SaveMetricsFile(_MAP, _PRECISIONS, _RECALLS, [1, 5], str(path))
  mean_ap, ranks, precisions, recalls = metrics_file.ReadMetricsFile(str(path))
  assert mean_ap == _MAP  # Exact: 70.0 / 100 == 0.7.
  assert ranks == [1, 5]
  assert sorted(precisions) == sorted(recalls) == ["hard", "medium"]
  for key in _MAP:
    np.testing.assert_array_equal(precisions[key], _PRECISIONS[key])
    np.testing.assert_array_equal(recalls[key], _RECALLS[key])


def test_repeated_protocol_is_malformed(tmp_path):
  path = tmp_path / "metrics.txt"
  block = "medium\n  mAP=90.0\n  mP@k[1 5] [ 100.   80.]\n  mR@k[1 5] [  50.  100.]\n"
  path.write_text(block + block)
  with pytest.raises(ValueError, match="Malformed input"):
    metrics_file.ReadMetricsFile(str(path))
  # The wide spacing alone is accepted.
  path.write_text(block)
  mean_ap, ranks, precisions, recalls = metrics_file.ReadMetricsFile(str(path))
  assert mean_ap == {"medium": 0.9}
  assert ranks == [1, 5]
  np.testing.assert_array_equal(precisions["medium"], [1.0, 0.8])
  np.testing.assert_array_equal(recalls["medium"], [0.5, 1.0])


@pytest.mark.parametrize(
  "text, message",
  [
    ("hard\n  mAP=70.0\n  mP@k[1 5] [100.  80.]\n", "multiple of 4"),
    (
      "hard\n  mAP=70.0\n  mP@k[1 5] [100.  80.]\n  mR@k[1 5] [50. 80.]\n"
      "medium\n  mAP=90.0\n  mP@k[1 10] [100. 100.]\n  mR@k[1 10] [ 50. 100.]\n",
      "differ from",
    ),
    ("hard\n  mAP=70.0\n  mP@k[1 5] [100.]\n  mR@k[1 5] [50. 80.]\n", "value count"),
    ("hard\n  mAP=x\n  mP@k[1 5] [100. 80.]\n  mR@k[1 5] [50. 80.]\n", "bad number"),
    ("hard\n  mAP=70.0\n  mR@k[1 5] [50. 80.]\n  mP@k[1 5] [50. 80.]\n", "mP@k"),
  ],
)
def test_malformed_inputs(tmp_path, text, message):
  path = tmp_path / "metrics.txt"
  path.write_text(text)
  with pytest.raises(ValueError, match=f"Malformed input.*{message}"):
    metrics_file.ReadMetricsFile(str(path))
