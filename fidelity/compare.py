"""Rows of the fidelity table and the differences they report.

A relative difference is taken per tensor against the reference's scale:
``max|ours - ref| / max|ref|`` (an element-wise ratio is meaningless where
values cross zero). A row reports the largest over its tensors and names that
tensor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np


@dataclasses.dataclass
class Row:
  """One line of the table: ``difference <= tolerance`` passes (``None``: not compared)."""

  check: str
  difference: float | None
  tolerance: float | None
  note: str = ""
  status: str | None = None  # "pass", "FAIL", "info", "skip"; None: from the numbers

  @property
  def outcome(self) -> str:
    if self.status:
      return self.status
    if self.difference is None or self.tolerance is None:
      return "info"
    return "pass" if self.difference <= self.tolerance else "FAIL"

  @property
  def failed(self) -> bool:
    return self.outcome == "FAIL"


def failure(check: str, reason: str) -> Row:
  """A check that could not produce its numbers (a command failed, a file is missing)."""
  return Row(check, None, None, reason, status="FAIL")


def relative_difference(ours, reference) -> float:
  ours = np.asarray(ours, np.float64)
  reference = np.asarray(reference, np.float64)
  if ours.shape != reference.shape:
    return float("inf")
  if reference.size == 0:
    return 0.0
  scale = float(np.max(np.abs(reference)))
  diff = float(np.max(np.abs(ours - reference)))
  if scale == 0.0:
    return diff if diff == 0.0 else float("inf")
  return diff / scale


def worst(ours: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> tuple[float, str]:
  """The largest relative difference over the shared keys, and its key; keys on one side only
  count as infinitely different."""
  missing = sorted(set(ours) ^ set(reference))
  if missing:
    return float("inf"), f"only on one side: {', '.join(missing[:3])}"
  result, name = 0.0, ""
  for key in sorted(reference):
    value = relative_difference(ours[key], reference[key])
    if value > result or not name:
      result, name = value, key
  return result, name


def count_differences(pairs: Iterable[tuple[object, object]]) -> int:
  return sum(1 for a, b in pairs if a != b)


def _number(value: float | None) -> str:
  if value is None:
    return "-"
  if value == 0:
    return "0"
  if value == float("inf"):
    return "inf"
  if float(value).is_integer() and abs(value) < 1e6:
    return str(int(value))
  return f"{value:.2e}"


def format_table(rows: Iterable[Row]) -> str:
  rows = list(rows)
  header = ("check", "max difference", "tolerance", "pass", "worst / note")
  body = [(r.check, _number(r.difference), _number(r.tolerance), r.outcome, r.note) for r in rows]
  widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(4)]
  lines = []
  for line in [header, *body]:
    cells = [str(cell).ljust(width) for cell, width in zip(line[:4], widths)]
    lines.append("  ".join([*cells, str(line[4])]).rstrip())
    if line is header:
      lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 12)
  return "\n".join(lines)
