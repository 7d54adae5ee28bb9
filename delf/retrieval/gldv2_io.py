"""Google Landmarks v2 solution and prediction CSV files (inference.md §7.1).

Every file has a header row, which is skipped. Solutions have the columns
``id,landmarks,Usage`` (recognition) or ``id,images,Usage`` (retrieval);
predictions ``id,landmarks`` (``"<landmark_id> <score>"``) or ``id,images``
(space-separated index ids, best first).

Differences from the reference (KB-57): any id that appears twice in a file
raises ``ValueError`` "... repeated ..." (the reference let repeats of ignored
ids and of empty predictions through), and an empty retrieval ground-truth
cell gives ``[]`` instead of ``['']``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Collection

RECOGNITION_TASK_ID = "recognition"
RETRIEVAL_TASK_ID = "retrieval"
_TASKS = (RECOGNITION_TASK_ID, RETRIEVAL_TASK_ID)


def _CheckTask(task: str) -> None:
  if task not in _TASKS:
    raise ValueError(f"Unrecognized task: {task} (expected one of {', '.join(_TASKS)})")


def _Rows(path: str):
  """Yields ``(line_number, row)`` for every row after the header."""
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.reader(f)
    next(reader, None)
    for row in reader:
      yield reader.line_num, row


def ReadSolution(file_path: str, task: str) -> tuple[dict[str, list], dict[str, list], list[str]]:
  """Reads a GLDv2 solution file.

  Args:
    file_path: CSV path.
    task: ``"recognition"`` (ground truth = list of int landmark ids) or
      ``"retrieval"`` (ground truth = list of index image ids).

  Returns:
    ``(public_solution, private_solution, ignored_ids)``; ``ignored_ids`` keeps
    the file order.

  Raises:
    ValueError: unknown task or Usage, a repeated id, or an unparsable landmark id.
  """
  _CheckTask(task)
  path = os.fspath(file_path)
  public_solution: dict[str, list] = {}
  private_solution: dict[str, list] = {}
  ignored_ids: list[str] = []
  seen: set[str] = set()
  for line, row in _Rows(path):
    if len(row) < 3:
      raise ValueError(f"{path}:{line}: expected 3 columns (id, ground truth, Usage), got {row}")
    test_id, ground_truth_cell, usage = row[0], row[1], row[2]
    if test_id in seen:
      raise ValueError(f"{path}:{line}: test image {test_id} is repeated")
    seen.add(test_id)
    if usage == "Ignored":
      ignored_ids.append(test_id)
      continue
    tokens = ground_truth_cell.split()
    if task == RECOGNITION_TASK_ID:
      try:
        ground_truth = [int(token) for token in tokens]
      except ValueError:
        raise ValueError(
          f"{path}:{line}: landmark ids must be integers, got {ground_truth_cell!r}"
        ) from None
    else:
      ground_truth = tokens
    if usage == "Public":
      public_solution[test_id] = ground_truth
    elif usage == "Private":
      private_solution[test_id] = ground_truth
    else:
      raise ValueError(f"{path}:{line}: test image {test_id} has unrecognized Usage tag {usage}")
  return public_solution, private_solution, ignored_ids


def ReadPredictions(
  file_path: str,
  public_ids: Collection[str],
  private_ids: Collection[str],
  ignored_ids: Collection[str],
  task: str,
) -> tuple[dict[str, object], dict[str, object]]:
  """Reads a GLDv2 predictions file.

  Empty rows are skipped, ignored ids are skipped, an empty prediction stores
  nothing, and one trailing empty token (a trailing space) is dropped.

  Returns:
    ``(public_predictions, private_predictions)``: recognition values are
    ``{"class": int, "score": float}``, retrieval values lists of index ids.

  Raises:
    ValueError: unknown task; an id seen twice ("repeated"); an id in neither
      the public nor the private set ("unrecognized"); a recognition prediction
      that is not exactly "<landmark_id> <score>".
  """
  _CheckTask(task)
  path = os.fspath(file_path)
  public_ids, private_ids, ignored_ids = set(public_ids), set(private_ids), set(ignored_ids)
  public_predictions: dict[str, object] = {}
  private_predictions: dict[str, object] = {}
  seen: set[str] = set()
  for line, row in _Rows(path):
    if not row:
      continue
    test_id = row[0]
    if test_id in seen:
      raise ValueError(f"{path}:{line}: test image {test_id} is repeated")
    seen.add(test_id)
    if test_id in ignored_ids:
      continue
    cell = row[1] if len(row) > 1 else ""
    if not cell:
      continue
    tokens = cell.split(" ")
    if not tokens[-1]:
      tokens = tokens[:-1]
    if task == RECOGNITION_TASK_ID:
      if len(tokens) != 2:
        raise ValueError(
          f"{path}:{line}: expected '<landmark_id> <score>' (2 elements), got {len(tokens)}: "
          f"{cell!r}"
        )
      try:
        prediction: object = {"class": int(tokens[0]), "score": float(tokens[1])}
      except ValueError:
        raise ValueError(f"{path}:{line}: cannot parse prediction {cell!r}") from None
    else:
      prediction = tokens
    if test_id in public_ids:
      public_predictions[test_id] = prediction
    elif test_id in private_ids:
      private_predictions[test_id] = prediction
    else:
      raise ValueError(f"{path}:{line}: test_id {test_id} is unrecognized")
  return public_predictions, private_predictions
