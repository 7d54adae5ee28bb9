"""The ``metrics.txt`` file written by ``perform_retrieval`` (inference.md §5.4, KB-55).

The format is NumPy's default ``str()`` of floats and arrays (``[ 1  5 10]``,
``[92.   86.86]``), which is part of the interface: published result files
and the reference reader depend on it. The writer therefore formats under
NumPy's default print options, whatever another module set globally.

Example::

  hard
    mAP=70.0
    mP@k[1 5] [100.  80.]
    mR@k[1 5] [50. 80.]

Ours: a run with ``--allow_missing_features`` that had to rank images without
features adds ``# ...`` lines at the end saying how many; the reader skips them
(the reference's reader would reject such a file, whose metrics are not comparable).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from delf import atomic_io

# NumPy's documented defaults; the file format must not follow set_printoptions().
_DEFAULT_PRINT_OPTIONS = dict(
  precision=8,
  threshold=1000,
  edgeitems=3,
  linewidth=75,
  suppress=False,
  nanstr="nan",
  infstr="inf",
  sign="-",
  floatmode="maxprec",
  legacy=False,
  formatter=None,
)


def FormatMetrics(
  mean_average_precision: Mapping[str, float],
  mean_precisions: Mapping[str, Sequence[float]],
  mean_recalls: Mapping[str, Sequence[float]],
  pr_ranks: Sequence[int],
) -> str:
  """Returns the text of a metrics file (protocols in sorted order, values × 100)."""
  with np.printoptions(**_DEFAULT_PRINT_OPTIONS):
    ranks = str(np.array(pr_ranks))
    blocks = []
    for key in sorted(mean_average_precision):
      average_precision = np.around(mean_average_precision[key] * 100, decimals=2)
      precisions = np.around(np.asarray(mean_precisions[key], dtype=np.float64) * 100, 2)
      recalls = np.around(np.asarray(mean_recalls[key], dtype=np.float64) * 100, 2)
      blocks.append(
        f"{key}\n  mAP={average_precision}\n  mP@k{ranks} {precisions}\n  mR@k{ranks} {recalls}\n"
      )
  return "".join(blocks)


def SaveMetricsFile(
  mean_average_precision: Mapping[str, float],
  mean_precisions: Mapping[str, Sequence[float]],
  mean_recalls: Mapping[str, Sequence[float]],
  pr_ranks: Sequence[int],
  output_path: str,
  notes: Sequence[str] = (),
) -> None:
  """Writes ``metrics.txt`` atomically (see the module docstring for the format).

  ``notes`` become ``# `` lines after the metrics (none: the reference's exact format).
  """
  text = FormatMetrics(mean_average_precision, mean_precisions, mean_recalls, pr_ranks)
  text += "".join(f"# {note}\n" for note in notes)
  atomic_io.write_text_atomic(output_path, text)


def _ParseBracket(path: str, line: str, prefix: str, index: int) -> list[str]:
  """Returns the space-separated tokens inside the ``index``-th ``[...]`` of a line."""
  if not line.startswith(prefix):
    raise ValueError(f"Malformed input {path}: expected a line starting with {prefix.strip()!r}")
  parts = line.split("[")
  if len(parts) <= index + 1 or "]" not in parts[index + 1]:
    raise ValueError(f"Malformed input {path}: cannot parse line {line.strip()!r}")
  return parts[index + 1].split("]")[0].split()


def ReadMetricsFile(
  metrics_path: str,
) -> tuple[dict[str, float], list[int], dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Reads a ``metrics.txt`` back; values are divided by 100.

  Returns:
    ``(mean_average_precision, pr_ranks, mean_precisions, mean_recalls)``.

  Raises:
    ValueError: "Malformed input ..." for a bad line count, a repeated protocol,
      inconsistent ranks, or a value count that differs from the rank count.
  """
  path = os.fspath(metrics_path)
  with open(path, encoding="utf-8") as f:
    lines = [line.rstrip() for line in f if not line.startswith("#")]
  if len(lines) % 4:
    raise ValueError(
      f"Malformed input {path}: number of lines must be a multiple of 4, but it is {len(lines)}"
    )
  mean_average_precision: dict[str, float] = {}
  mean_precisions: dict[str, np.ndarray] = {}
  mean_recalls: dict[str, np.ndarray] = {}
  pr_ranks: list[int] = []
  for i in range(0, len(lines), 4):
    protocol, map_line, precision_line, recall_line = lines[i : i + 4]
    if protocol in mean_average_precision:
      raise ValueError(f"Malformed input {path}: protocol {protocol!r} appears twice")
    if not map_line.startswith("  mAP="):
      raise ValueError(f"Malformed input {path}: expected '  mAP=' after {protocol!r}")
    try:
      mean_average_precision[protocol] = float(map_line.split("=", 1)[1]) / 100.0
      ranks = [int(r) for r in _ParseBracket(path, precision_line, "  mP@k[", 0)]
      precisions = [float(v) for v in _ParseBracket(path, precision_line, "  mP@k[", 1)]
      recalls = [float(v) for v in _ParseBracket(path, recall_line, "  mR@k[", 1)]
    except ValueError as e:
      if str(e).startswith("Malformed input"):
        raise
      raise ValueError(f"Malformed input {path}: bad number in block {protocol!r} ({e})") from None
    if not pr_ranks:
      pr_ranks = ranks
    elif ranks != pr_ranks:
      raise ValueError(
        f"Malformed input {path}: PR ranks {ranks} of {protocol!r} differ from {pr_ranks}"
      )
    if len(precisions) != len(pr_ranks) or len(recalls) != len(pr_ranks):
      raise ValueError(
        f"Malformed input {path}: {protocol!r} has a value count that differs from the "
        f"{len(pr_ranks)} PR ranks"
      )
    mean_precisions[protocol] = np.array(precisions) / 100.0
    mean_recalls[protocol] = np.array(recalls) / 100.0
  return mean_average_precision, pr_ranks, mean_precisions, mean_recalls
