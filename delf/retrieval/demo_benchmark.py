"""A small Revisited-Oxford-format benchmark rendered from the demo landmarks.

It lets the whole DELG retrieval pipeline (extraction with query cropping,
``perform_retrieval`` with and without geometric verification, metrics.txt)
run without downloading ROxford5k. The layout is the real one:

* ``<output_dir>/images/<name>.jpg`` for every query and index image;
* ``<output_dir>/gnd_<name>.mat`` with the fields of ``gnd_roxford5k.mat``:
  ``imlist`` and ``qimlist`` (cell arrays of names without extension) and the
  struct array ``gnd`` (one entry per query) with ``bbx`` (the landmark's
  bounding box in the query view, ``[x1, y1, x2, y2]``), ``easy``, ``hard``
  and ``junk`` (1-based index lists, MATLAB doubles);
* ``<output_dir>/gnd_<name>.json``: the same ground truth in the JSON form that
  ``revisited.ReadDatasetFile`` also accepts (``index_base`` 0).

Per landmark there are query views and index views: mild views are "easy",
strong viewpoint/photometric changes are "hard", and a view showing only a
small corner of the landmark is "junk" (as in the revisitop protocol: less
than about a quarter of the object visible). Views of other photos serve as
distractors.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from PIL import Image

from delf import atomic_io

_EASY_DIFFICULTY = 0.35
_HARD_DIFFICULTY = 1.0


@dataclasses.dataclass(frozen=True)
class DemoBenchmarkInfo:
  """What ``make_demo_benchmark`` wrote."""

  images_dir: str
  mat_path: str
  json_path: str
  query_list: list[str]
  index_list: list[str]
  ground_truth: list[dict]  # 0-based easy/hard/junk arrays and bbx, as ReadDatasetFile returns.


def _LandmarkBox(homography: np.ndarray, landmark_hw: tuple[int, int], view_hw) -> np.ndarray:
  """Bounding box ``[x1, y1, x2, y2]`` of the landmark image's outline in the view."""
  h, w = landmark_hw
  corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64)
  mapped = corners @ homography.T
  mapped = mapped[:, :2] / mapped[:, 2:3]
  x1, y1 = np.maximum(mapped.min(axis=0), 0.0)
  x2 = min(mapped[:, 0].max(), view_hw[1] - 1.0)
  y2 = min(mapped[:, 1].max(), view_hw[0] - 1.0)
  return np.array([x1, y1, x2, y2], dtype=np.float64)


def _JunkView(view: np.ndarray, box: np.ndarray, background: np.ndarray) -> np.ndarray:
  """Keeps only a corner (about a sixth of the area) of the landmark; the rest is background."""
  x1, y1, x2, y2 = box
  keep_w, keep_h = (x2 - x1) * 0.4, (y2 - y1) * 0.4
  result = background.copy()
  ys, xs = int(y1), int(x1)
  ye, xe = int(y1 + keep_h) + 1, int(x1 + keep_w) + 1
  result[ys:ye, xs:xe] = view[ys:ye, xs:xe]
  return result


def _WriteJpeg(path: str, image: np.ndarray) -> None:
  with atomic_io.atomic_output(path, "wb") as f:
    Image.fromarray(image).save(f, format="JPEG", quality=92)


def SaveGroundTruthMat(
  path: str, query_list: list[str], index_list: list[str], ground_truth: list[dict]
) -> None:
  """Writes a ``gnd_*.mat`` file like ROxford's (1-based doubles) from 0-based entries."""
  from scipy.io import savemat

  fields = [("bbx", "O"), ("easy", "O"), ("hard", "O"), ("junk", "O")]
  gnd = np.empty((1, len(ground_truth)), dtype=fields)
  for i, entry in enumerate(ground_truth):
    gnd[0, i] = (
      np.asarray(entry["bbx"], dtype=np.float64).reshape(1, 4),
      *(
        (np.asarray(entry[key], dtype=np.float64) + 1).reshape(1, -1)
        for key in ("easy", "hard", "junk")
      ),
    )
  imlist = np.empty((1, len(index_list)), dtype=object)
  imlist[0, :] = index_list
  qimlist = np.empty((1, len(query_list)), dtype=object)
  qimlist[0, :] = query_list
  with atomic_io.atomic_output(path, "wb") as f:
    savemat(f, {"imlist": imlist, "qimlist": qimlist, "gnd": gnd})


def SaveGroundTruthJson(
  path: str, query_list: list[str], index_list: list[str], ground_truth: list[dict]
) -> None:
  """Writes the JSON ground-truth form (0-based indices) read by ``ReadDatasetFile``."""
  content = {
    "index_base": 0,
    "imlist": list(index_list),
    "qimlist": list(query_list),
    "gnd": [
      {
        "bbx": [float(v) for v in entry["bbx"]],
        **{key: [int(v) for v in entry[key]] for key in ("easy", "hard", "junk")},
      }
      for entry in ground_truth
    ],
  }
  atomic_io.write_text_atomic(path, json.dumps(content, indent=1) + "\n")


def make_demo_benchmark(
  output_dir: str,
  *,
  name: str = "demo",
  num_landmarks: int = 4,
  queries_per_landmark: int = 2,
  easy_per_landmark: int = 2,
  hard_per_landmark: int = 2,
  junk_per_landmark: int = 1,
  num_distractors: int = 6,
  image_size: tuple[int, int] = (240, 320),
  seed: int = 0,
) -> DemoBenchmarkInfo:
  """Renders the benchmark images and writes its ground truth (.mat and .json).

  Args:
    output_dir: created if missing.
    name: ground-truth files are ``gnd_<name>.mat`` / ``gnd_<name>.json``.
    num_landmarks: landmarks with queries (the first demo source photos).
    queries_per_landmark: query views per landmark.
    easy_per_landmark, hard_per_landmark, junk_per_landmark: index views per landmark.
    num_distractors: index views of other photos (no query).
    image_size: ``(height, width)`` of every image.
    seed: all randomness; the same seed gives the same files.

  Returns:
    A ``DemoBenchmarkInfo`` (ground truth as ``ReadDatasetFile`` returns it).
  """
  from delf.data import demo  # Deferred: scikit-image data is only needed here.

  sources = demo.landmark_source_images()
  if num_landmarks < 1 or num_landmarks + (1 if num_distractors else 0) > len(sources):
    raise ValueError(
      f"num_landmarks must be between 1 and {len(sources) - 1} (there are "
      f"{len(sources)} demo photos and distractors need others)"
    )
  rng = np.random.default_rng(seed)
  images_dir = os.path.join(output_dir, "images")
  os.makedirs(images_dir, exist_ok=True)
  image_size = (int(image_size[0]), int(image_size[1]))

  def background() -> np.ndarray:
    other = sources[len(sources) - 1 - int(rng.integers(0, len(sources) - num_landmarks))]
    view, _ = demo.render_landmark_view(other, rng, image_size, difficulty=_HARD_DIFFICULTY)
    return view

  index_list: list[str] = []
  index_labels: list[tuple[int, str]] = []  # (landmark, "easy" | "hard" | "junk")
  query_list: list[str] = []
  query_boxes: list[np.ndarray] = []
  query_landmarks: list[int] = []
  for k in range(num_landmarks):
    landmark = sources[k]
    for q in range(queries_per_landmark):
      view, homography = demo.render_landmark_view(
        landmark, rng, image_size, difficulty=_EASY_DIFFICULTY
      )
      query_name = f"query_{k:02d}_{q}"
      _WriteJpeg(os.path.join(images_dir, query_name + ".jpg"), view)
      query_list.append(query_name)
      query_boxes.append(_LandmarkBox(homography, landmark.shape[:2], image_size))
      query_landmarks.append(k)
    kinds = ["easy"] * easy_per_landmark + ["hard"] * hard_per_landmark
    kinds += ["junk"] * junk_per_landmark
    for n, kind in enumerate(kinds):
      difficulty = _EASY_DIFFICULTY if kind == "easy" else _HARD_DIFFICULTY
      view, homography = demo.render_landmark_view(landmark, rng, image_size, difficulty)
      if kind == "junk":
        view = _JunkView(
          view, _LandmarkBox(homography, landmark.shape[:2], image_size), background()
        )
      index_name = f"index_{k:02d}_{n}"
      _WriteJpeg(os.path.join(images_dir, index_name + ".jpg"), view)
      index_list.append(index_name)
      index_labels.append((k, kind))
  for n in range(num_distractors):
    other = sources[num_landmarks + n % (len(sources) - num_landmarks)]
    view, _ = demo.render_landmark_view(other, rng, image_size, difficulty=_EASY_DIFFICULTY)
    index_name = f"distractor_{n:02d}"
    _WriteJpeg(os.path.join(images_dir, index_name + ".jpg"), view)
    index_list.append(index_name)
    index_labels.append((-1, "distractor"))

  ground_truth = []
  for box, k in zip(query_boxes, query_landmarks):
    entry = {
      kind: np.array(
        [j for j, (landmark, label) in enumerate(index_labels) if landmark == k and label == kind],
        dtype=np.int64,
      )
      for kind in ("easy", "hard", "junk")
    }
    entry["bbx"] = box
    ground_truth.append(entry)
  mat_path = os.path.join(output_dir, f"gnd_{name}.mat")
  json_path = os.path.join(output_dir, f"gnd_{name}.json")
  SaveGroundTruthMat(mat_path, query_list, index_list, ground_truth)
  SaveGroundTruthJson(json_path, query_list, index_list, ground_truth)
  return DemoBenchmarkInfo(
    images_dir=images_dir,
    mat_path=mat_path,
    json_path=json_path,
    query_list=query_list,
    index_list=index_list,
    ground_truth=ground_truth,
  )
