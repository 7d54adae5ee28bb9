"""Ground-truth homographies: reading them, and measuring matches against them.

A RANSAC inlier count says how many correspondences agree with *some* affine map,
not whether they are right. When the true mapping between two images is known (a
planar scene such as Oxford Graffiti, or the demo's synthetic views), each inlier
can be checked: it is correct if its image-2 location lies within a tolerance of
the homography applied to its image-1 location.

Conventions. A homography file maps homogeneous pixel coordinates ``(x, y, 1)`` of
image 1 to ``(x, y, 1)`` of image 2 (column first, as OpenCV and the Oxford affine
datasets write them). DELF locations are ``(y, x)`` rows (KB-42); the functions here
that take *locations* swap the axes themselves, so callers pass ``.delf`` locations
as they are.

Accepted files: JSON ``{"homography": [[...], [...], [...]]}`` (other keys ignored),
plain text with 3 rows of 3 numbers (``#`` comments allowed), and OpenCV
FileStorage XML holding one 3x3 ``opencv-matrix`` (e.g. ``H1to3p.xml``).

This module must not import TensorFlow (``match_images.py`` is TF-free).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

from delf import atomic_io


class HomographyFileError(ValueError):
  """A homography file is missing or malformed; the message is one line naming the file."""


def _parse_numbers(text: str) -> list[list[float]]:
  rows = []
  for line in text.splitlines():
    line = line.split("#", 1)[0].strip()
    if line:
      rows.append([float(v) for v in line.replace(",", " ").split()])
  return rows


def _parse_opencv_xml(text: str) -> list[list[float]]:
  matrices = re.findall(r"<(\w+)\s+type_id=\"opencv-matrix\"\s*>(.*?)</\1>", text, flags=re.S)
  if len(matrices) != 1:
    names = ", ".join(name for name, _ in matrices) or "none"
    raise ValueError(f"expected exactly one opencv-matrix node, found {len(matrices)} ({names})")
  name, body = matrices[0]
  fields = {}
  for field in ("rows", "cols", "data"):
    match = re.search(rf"<{field}>(.*?)</{field}>", body, flags=re.S)
    if match is None:
      raise ValueError(f"opencv-matrix node {name} has no <{field}>")
    fields[field] = match.group(1)
  rows, cols = int(fields["rows"]), int(fields["cols"])
  values = [float(v) for v in fields["data"].split()]
  if rows * cols != len(values):
    raise ValueError(f"node {name} declares {rows}x{cols} but holds {len(values)} values")
  return [values[r * cols : (r + 1) * cols] for r in range(rows)]


def _describe(rows) -> str:
  if isinstance(rows, list):
    return f"{len(rows)} rows"
  return f"a {type(rows).__name__}"


def _parse(path: str, text: str) -> list[list[float]]:
  stripped = text.lstrip()
  if stripped.startswith("{"):
    data = json.loads(text)
    if not isinstance(data, dict) or "homography" not in data:
      raise ValueError('JSON has no "homography" key')
    return data["homography"]
  if stripped.startswith("<") or path.lower().endswith(".xml"):
    return _parse_opencv_xml(text)
  return _parse_numbers(text)


def load_homography(path: str | os.PathLike) -> np.ndarray:
  """Reads a 3x3 homography (JSON, plain text or OpenCV XML; see the module doc).

  Returns:
    float64 [3, 3], mapping (x, y, 1) of image 1 to (x, y, 1) of image 2.

  Raises:
    HomographyFileError: missing or unreadable file, not 3x3, non-finite or singular
      matrix (one line naming the file and the problem).
  """
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    raise HomographyFileError(f"homography file not found: {path}") from None
  except (OSError, UnicodeDecodeError) as e:
    raise HomographyFileError(f"cannot read homography file {path}: {e}") from None
  try:
    rows = _parse(path, text)
    if not isinstance(rows, list) or len(rows) != 3:
      raise ValueError(f"expected 3 rows of 3 numbers, got {_describe(rows)}")
    if any(not isinstance(row, list) or len(row) != 3 for row in rows):
      lengths = [len(row) if isinstance(row, list) else 1 for row in rows]
      raise ValueError(f"expected 3 rows of 3 numbers, got rows of {lengths} numbers")
    matrix = np.array(rows, dtype=np.float64)
  except (ValueError, TypeError) as e:
    problem = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise HomographyFileError(f"malformed homography file {path}: {problem}") from None
  if not np.all(np.isfinite(matrix)):
    raise HomographyFileError(f"malformed homography file {path}: non-finite values")
  if np.linalg.matrix_rank(matrix) < 3:
    raise HomographyFileError(f"malformed homography file {path}: the matrix is singular")
  return matrix


def save_homography(path: str | os.PathLike, homography: np.ndarray, **extra) -> None:
  """Writes ``{"homography": 3x3, **extra}`` as JSON, atomically (readable by ``load_homography``)."""
  matrix = np.asarray(homography, dtype=np.float64)
  if matrix.shape != (3, 3):
    raise ValueError(f"a homography is 3x3, got shape {list(matrix.shape)}")
  # One matrix row per line, the rest as usual: readable, and still plain JSON.
  rows = ",\n".join(f"    {json.dumps(row)}" for row in matrix.tolist())
  lines = [f'  "homography": [\n{rows}\n  ]']
  lines += [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in extra.items()]
  atomic_io.write_text_atomic(path, "{\n" + ",\n".join(lines) + "\n}\n")


def project_xy(homography: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
  """Applies ``homography`` to [N, 2] (x, y) points; points mapped to infinity become inf."""
  points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
  mapped = np.c_[points, np.ones(len(points))] @ np.asarray(homography, dtype=np.float64).T
  w = mapped[:, 2:]
  with np.errstate(divide="ignore", invalid="ignore"):
    projected = np.where(np.abs(w) > 1e-12, mapped[:, :2] / w, np.inf)
  return projected


def project_locations(homography: np.ndarray, locations_yx: np.ndarray) -> np.ndarray:
  """Applies an (x, y) ``homography`` to [N, 2] DELF (y, x) locations; returns (y, x)."""
  locations = np.asarray(locations_yx, dtype=np.float64).reshape(-1, 2)
  return project_xy(homography, locations[:, ::-1])[:, ::-1]


def reprojection_errors(
  homography: np.ndarray, locations_1: np.ndarray, locations_2: np.ndarray
) -> np.ndarray:
  """Pixel distance between H(location_1) and location_2 for corresponding (y, x) rows."""
  projected = project_locations(homography, locations_1)
  difference = projected - np.asarray(locations_2, dtype=np.float64).reshape(-1, 2)
  with np.errstate(invalid="ignore"):
    errors = np.linalg.norm(difference, axis=1)
  return np.where(np.isfinite(errors), errors, np.inf)


@dataclasses.dataclass(frozen=True)
class InlierCheck:
  """The RANSAC inliers of one image pair, measured against a ground-truth homography.

  Attributes:
    inliers: bool [M] RANSAC inlier mask over the putative pairs.
    correct: bool [M]; True for inliers within ``tolerance_px`` of the ground truth.
    errors: float [M] reprojection error (px) of every putative pair.
    tolerance_px: the tolerance used.
  """

  inliers: np.ndarray
  correct: np.ndarray
  errors: np.ndarray
  tolerance_px: float

  @property
  def num_inliers(self) -> int:
    return int(np.count_nonzero(self.inliers))

  @property
  def num_correct(self) -> int:
    return int(np.count_nonzero(self.correct))

  @property
  def num_wrong(self) -> int:
    return self.num_inliers - self.num_correct

  @property
  def fraction_correct(self) -> float:
    """Correct inliers / inliers (0 when there is no inlier)."""
    return self.num_correct / self.num_inliers if self.num_inliers else 0.0

  @property
  def percent_correct(self) -> int:
    """Rounded percentage, never 0 or 100 unless none or all inliers are correct."""
    percent = round(100 * self.fraction_correct)
    if 0 < self.num_correct < self.num_inliers:
      percent = min(max(percent, 1), 99)
    return int(percent)

  def summary(self) -> str:
    """``Found 56 inliers; 52 (93 %) within 10 px of the ground-truth homography``."""
    return (
      f"Found {self.num_inliers} inliers; {self.num_correct} ({self.percent_correct} %) "
      f"within {self.tolerance_px:g} px of the ground-truth homography"
    )


def check_inliers(
  homography: np.ndarray,
  locations_1: np.ndarray,
  locations_2: np.ndarray,
  pairs: np.ndarray,
  inliers: np.ndarray,
  tolerance_px: float = 10.0,
) -> InlierCheck:
  """Counts the inliers whose image-2 location is within ``tolerance_px`` of H(image-1 location).

  Args:
    homography: 3x3 mapping (x, y, 1) of image 1 to image 2.
    locations_1, locations_2: [N1, 2] / [N2, 2] (y, x) keypoints (``.delf`` order).
    pairs: int [M, 2] putative matches (index in 1, index in 2).
    inliers: bool [M] RANSAC inlier mask.
    tolerance_px: a pair is correct if its error is at most this (> 0).
  """
  if not tolerance_px > 0:
    raise ValueError(f"the tolerance must be a positive number of pixels, got {tolerance_px}")
  pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
  inliers = np.asarray(inliers, dtype=bool).reshape(-1)
  if inliers.shape[0] != pairs.shape[0]:
    raise ValueError(f"{pairs.shape[0]} pairs but {inliers.shape[0]} inlier flags")
  points_1 = np.asarray(locations_1, dtype=np.float64).reshape(-1, 2)[pairs[:, 0]]
  points_2 = np.asarray(locations_2, dtype=np.float64).reshape(-1, 2)[pairs[:, 1]]
  errors = reprojection_errors(homography, points_1, points_2)
  return InlierCheck(
    inliers=inliers,
    correct=inliers & (errors <= tolerance_px),
    errors=errors,
    tolerance_px=float(tolerance_px),
  )
