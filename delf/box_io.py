"""Reads and writes detected boxes (``Boxes``: .boxes files).

Behaviour follows the reference (inference.md §3.3, KB-44): boxes are
[ymin, xmin, ymax, xmax]; readers return float64 arrays, class indices
included; an empty file reads back as three empty arrays.
"""

from __future__ import annotations

import numpy as np

from delf import atomic_io
from delf.protos import box_pb2


def ArraysToBoxes(
  boxes: np.ndarray, scores: np.ndarray, class_indices: np.ndarray
) -> box_pb2.Boxes:
  """Converts [N, 4] boxes, [N] scores and [N] class indices to ``Boxes``."""
  num_boxes = len(scores)
  if not num_boxes == np.shape(boxes)[0] == len(class_indices):
    raise ValueError(
      f"Inconsistent box counts: scores {num_boxes}, boxes {np.shape(boxes)[0]}, "
      f"class_indices {len(class_indices)}"
    )
  message = box_pb2.Boxes()
  for i in range(num_boxes):
    box = message.box.add()
    box.ymin, box.xmin, box.ymax, box.xmax = (float(v) for v in boxes[i])
    box.score = scores[i]
    box.class_index = int(class_indices[i])
  return message


def BoxesToArrays(message: box_pb2.Boxes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Converts ``Boxes`` to (boxes [N, 4], scores [N], class_indices [N]), float64."""
  num_boxes = len(message.box)
  if num_boxes == 0:
    return np.array([]), np.array([]), np.array([])
  boxes = np.array([[b.ymin, b.xmin, b.ymax, b.xmax] for b in message.box], dtype=np.float64)
  scores = np.array([b.score for b in message.box], dtype=np.float64)
  class_indices = np.array([b.class_index for b in message.box], dtype=np.float64)
  return boxes, scores, class_indices


def SerializeToString(boxes: np.ndarray, scores: np.ndarray, class_indices: np.ndarray) -> bytes:
  return ArraysToBoxes(boxes, scores, class_indices).SerializeToString()


def ParseFromString(string: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  message = box_pb2.Boxes()
  message.ParseFromString(string)
  return BoxesToArrays(message)


def ReadFromFile(file_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  with open(file_path, "rb") as f:
    return ParseFromString(f.read())


def WriteToFile(
  file_path: str, boxes: np.ndarray, scores: np.ndarray, class_indices: np.ndarray
) -> None:
  """Writes boxes to a .boxes file (atomically)."""
  atomic_io.write_bytes_atomic(file_path, SerializeToString(boxes, scores, class_indices))
