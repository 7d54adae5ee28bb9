"""The ground-truth geometry of the demo dataset: each view's homography, and pair homographies.

``make_demo_dataset`` renders every landmark image as a perspective warp of the
landmark's source photo and knows the warp. It records them in
``<root>/view_homographies.json``::

  {"convention": "...",
   "views": {"<image id>": {"split": "index", "landmark_id": 123,
                            "homography": [[...], [...], [...]]}, ...}}

where each homography maps pixel ``(x, y, 1)`` of the landmark's source photo to
``(x, y, 1)`` of the JPEG on disk (rendered at the file's size: no resize in
between). Two views of one landmark are then related by
``H_pair = H_2 @ inv(H_1)`` (image 1 pixels -> image 2 pixels), which
``match_images.py --homography_path`` uses to count correct matches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from delf import atomic_io, homography

FILENAME = "view_homographies.json"
CONVENTION = (
  "homography maps pixel (x, y, 1) of the landmark's source photo to (x, y, 1) of the image file"
)


@dataclasses.dataclass(frozen=True)
class ViewGeometry:
  """Where one demo image shows its landmark.

  Attributes:
    split: ``train``, ``index`` or ``test``.
    landmark_id: the landmark whose photo the image shows (its content, which for a
      noisy train image differs from its label).
    homography: 3x3, landmark source pixel (x, y, 1) -> image pixel (x, y, 1).
  """

  split: str
  landmark_id: int
  homography: np.ndarray


def write_view_homographies(root: str | os.PathLike, views: dict[str, ViewGeometry]) -> None:
  """Writes ``<root>/view_homographies.json`` atomically (ids in the given order)."""
  lines = []
  for image_id, view in views.items():
    entry = {
      "split": view.split,
      "landmark_id": int(view.landmark_id),
      "homography": np.asarray(view.homography, dtype=np.float64).tolist(),
    }
    lines.append(f"  {json.dumps(image_id)}: {json.dumps(entry)}")
  # One view per line: plain JSON that stays readable (and diffable) for ~100 images.
  text = f'{{"convention": {json.dumps(CONVENTION)},\n "views": {{\n' + ",\n".join(lines) + "\n}}\n"
  atomic_io.write_text_atomic(pathlib.Path(root, FILENAME), text)


def read_view_homographies(root: str | os.PathLike) -> dict[str, ViewGeometry]:
  """Reads ``<root>/view_homographies.json``.

  Raises:
    ValueError: a missing or malformed file (one line naming it).
  """
  path = pathlib.Path(root, FILENAME)
  try:
    data = json.loads(path.read_text())
    views = {}
    for image_id, view in data["views"].items():
      matrix = np.array(view["homography"], dtype=np.float64)
      if matrix.shape != (3, 3):
        raise ValueError(f"view {image_id}: homography of shape {list(matrix.shape)}")
      views[image_id] = ViewGeometry(view["split"], int(view["landmark_id"]), matrix)
  except FileNotFoundError:
    raise ValueError(
      f"{path} not found (datasets made before view homographies were recorded lack it: "
      "make the demo dataset again)"
    ) from None
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"malformed {path}: {type(e).__name__}: {e}") from None
  return views


def pair_homography(view_1: ViewGeometry, view_2: ViewGeometry) -> np.ndarray:
  """Homography image 1 pixel (x, y, 1) -> image 2 pixel, for two views of one landmark."""
  if view_1.landmark_id != view_2.landmark_id:
    raise ValueError(
      f"the views show different landmarks ({view_1.landmark_id} and {view_2.landmark_id}): "
      "no homography relates them"
    )
  matrix = view_2.homography @ np.linalg.inv(view_1.homography)
  return matrix / matrix[2, 2]


def write_pair_homography(
  dataset_root: str | os.PathLike,
  image_id_1: str,
  image_id_2: str,
  output_path: str | os.PathLike,
) -> np.ndarray:
  """Writes the image 1 -> image 2 homography of two demo images as JSON (``--homography_path``).

  Returns:
    The 3x3 matrix written.
  """
  views = read_view_homographies(dataset_root)
  for image_id in (image_id_1, image_id_2):
    if image_id not in views:
      raise ValueError(
        f"image {image_id} has no recorded homography in {pathlib.Path(dataset_root, FILENAME)}"
      )
  matrix = pair_homography(views[image_id_1], views[image_id_2])
  homography.save_homography(
    output_path,
    matrix,
    image_1=image_id_1,
    image_2=image_id_2,
    convention="maps pixel (x, y, 1) of image 1 to (x, y, 1) of image 2",
  )
  return matrix
