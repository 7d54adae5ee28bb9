"""Demo GLDv2 data: layout, CSV formats, determinism, the view homographies and pair homographies."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image
from skimage import transform

from delf import homography
from delf.data import build, demo, view_homographies
from tests.data_fixtures import make_tiny_gldv2

HEX16 = re.compile(r"^[0-9a-f]{16}$")


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("demo")
  return make_tiny_gldv2(root, plant_bad_files=True)


def test_layout_and_csv_formats(tiny):
  root = tiny.root
  train = _rows(root / "train" / "train.csv")
  assert train[0] == ["id", "url", "landmark_id"]
  clean = _rows(root / "train" / "train_clean.csv")
  assert clean[0] == ["landmark_id", "images"]
  assert _rows(root / "train" / "train_label_to_category.csv")[0] == ["landmark_id", "category"]
  assert _rows(root / "index" / "index.csv")[0] == ["id"]
  assert _rows(root / "index" / "index_image_to_landmark.csv")[0] == ["id", "landmark_id"]
  assert _rows(root / "index" / "index_label_to_category.csv")[0] == ["landmark_id", "category"]
  assert _rows(root / "test" / "test.csv")[0] == ["id"]
  recognition = _rows(root / "test" / "ground_truth" / "recognition_solution_v2.1.csv")
  retrieval = _rows(root / "test" / "ground_truth" / "retrieval_solution_v2.1.csv")
  assert recognition[0] == ["id", "landmarks", "Usage"]
  assert retrieval[0] == ["id", "images", "Usage"]

  clean_ids = [i for row in clean[1:] for i in row[1].split(" ")]
  assert clean_ids == tiny.train_clean_ids
  assert [r[0] for r in train[1:]] == tiny.train_ids
  for image_id in tiny.train_ids + tiny.index_ids + tiny.test_ids + clean_ids:
    assert HEX16.match(image_id)
  # Files sit at <split>/<c0>/<c1>/<c2>/<id>.jpg; only the planted missing id has none.
  for split, ids in (("train", clean_ids), ("index", tiny.index_ids), ("test", tiny.test_ids)):
    for image_id in ids:
      path = root / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"
      assert path.is_file() == (tiny.bad_files.get(image_id) != "missing"), image_id
  # Noisy images are in train.csv only; labels in train.csv are landmark ids.
  assert set(tiny.noisy_ids) <= {r[0] for r in train[1:]}
  assert not set(tiny.noisy_ids) & set(clean_ids)
  assert {int(r[2]) for r in train[1:]} <= set(tiny.landmark_ids)
  # Landmark ids are not contiguous 0..N-1.
  assert sorted(tiny.landmark_ids) != list(range(len(tiny.landmark_ids)))
  # Ground truth: every landmark query lists the index images of its landmark.
  index_truth = {r[0]: int(r[1]) for r in _rows(root / "index" / "index_image_to_landmark.csv")[1:]}
  for (qid, landmarks, usage), (rid, images, rusage) in zip(recognition[1:], retrieval[1:]):
    assert qid == rid
    assert usage in ("Public", "Private")
    if landmarks:
      assert rusage == usage
      assert {index_truth[i] for i in images.split(" ")} == {int(landmarks)}
    else:
      assert (images, rusage) == ("None", "Ignored")


def test_planted_bad_files(tiny):
  kinds = {kind: image_id for image_id, kind in tiny.bad_files.items()}
  assert set(kinds) == {"truncated", "grayscale", "png", "missing"}
  assert Image.open(tiny.path("train", kinds["grayscale"])).mode == "L"
  assert Image.open(tiny.path("train", kinds["png"])).format == "PNG"
  truncated = tiny.path("train", kinds["truncated"])
  assert truncated.stat().st_size < tiny.path("train", tiny.train_clean_ids[0]).stat().st_size
  _, _, problem = build.validate_image(str(truncated))  # Strict whatever Pillow's switch.
  assert problem is not None and "truncated" in problem
  assert not tiny.path("train", kinds["missing"]).exists()
  with Image.open(tiny.path("train", tiny.train_clean_ids[0])) as image:
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 48))


def test_deterministic_for_seed(tmp_path):
  a = make_tiny_gldv2(tmp_path / "a", num_landmarks=2, images_per_landmark=2)
  b = make_tiny_gldv2(tmp_path / "b", num_landmarks=2, images_per_landmark=2)
  c = make_tiny_gldv2(tmp_path / "c", num_landmarks=2, images_per_landmark=2, seed=1)
  files_a = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
  files_b = sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
  assert files_a == files_b
  for rel in files_a:
    assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
  assert set(c.train_ids).isdisjoint(a.train_ids)


def test_source_images_are_distinct_real_photos():
  sources = demo.landmark_source_images()
  assert len(sources) >= 12
  for image in sources:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert min(image.shape[:2]) >= 150 and image.std() > 10
  for i in range(len(sources)):
    for j in range(i + 1, len(sources)):
      assert not demo._same_photo(sources[i], sources[j]), (i, j)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_render_homography_matches_independent_warp(seed):
  # With difficulty 0 there is no photometric change, so inside the landmark's
  # footprint the view must equal skimage's projective warp by the returned matrix.
  landmark = demo.landmark_source_images()[seed]
  view, homography = demo.render_landmark_view(landmark, np.random.default_rng(seed), (96, 128), 0)
  assert view.shape == (96, 128, 3) and view.dtype == np.uint8
  tform = transform.ProjectiveTransform(homography)
  expected = transform.warp(landmark, tform.inverse, output_shape=(96, 128), order=1, cval=-1)
  inside = (expected >= 0).all(axis=-1)
  inside[[0, -1], :] = False
  inside[:, [0, -1]] = False
  assert inside.mean() > 0.3
  diff = np.abs(view.astype(float) - 255 * expected)[inside]
  assert np.percentile(diff, 99) <= 2.0


def test_render_difficulty_changes_view_and_keeps_geometry():
  landmark = demo.landmark_source_images()[0]
  view, homography = demo.render_landmark_view(landmark, np.random.default_rng(5), (120, 160))
  assert np.isclose(homography[2, 2], 1.0)
  # The landmark's centre lands inside the view, and views are new each call.
  centre = homography @ np.array([landmark.shape[1] / 2, landmark.shape[0] / 2, 1.0])
  x, y = centre[:2] / centre[2]
  assert 0 <= x < 160 and 0 <= y < 120
  view2, homography2 = demo.render_landmark_view(landmark, np.random.default_rng(6), (120, 160))
  assert not np.allclose(homography, homography2)
  assert np.abs(view.astype(int) - view2.astype(int)).mean() > 5


def test_script_writes_the_same_as_the_library(tmp_path, capsys):
  from tests.data_fixtures import run_data_script

  run_data_script(
    "make_demo_dataset",
    output_dir=tmp_path / "cli",
    num_landmarks=2,
    images_per_landmark=3,
    image_width=64,
    image_height=48,
    plant_bad_files=True,
  )
  assert "2 landmarks" in capsys.readouterr().out
  info = make_tiny_gldv2(
    tmp_path / "lib", num_landmarks=2, images_per_landmark=3, plant_bad_files=True
  )
  for rel in (
    "train/train.csv",
    "train/train_clean.csv",
    "test/test.csv",
    "index/index.csv",
    "view_homographies.json",
  ):
    assert (tmp_path / "cli" / rel).read_bytes() == (info.root / rel).read_bytes(), rel


# ---------------------------------------------------------------------------------------
# Recorded view homographies and pair homographies (match_images --homography_path)

MARKER_XY = (140.0, 50.0)  # Centre of the magenta disc in the marker landmark, (x, y).


def _marker_landmark() -> np.ndarray:
  """A green landmark photo with one magenta disc (radius 9 px) at MARKER_XY."""
  image = np.zeros([160, 200, 3], np.uint8)
  image[:] = (30, 200, 30)
  ys, xs = np.mgrid[0:160, 0:200]
  image[(xs - MARKER_XY[0]) ** 2 + (ys - MARKER_XY[1]) ** 2 <= 81] = (230, 30, 230)
  return image


def _find_marker(path) -> tuple[np.ndarray, int]:
  """(x, y) centroid and area of the largest magenta blob of an image file."""
  from scipy import ndimage

  with Image.open(path) as image:
    rgb = np.asarray(image.convert("RGB")).astype(int)
  mask = (rgb[..., 0] - rgb[..., 1] > 60) & (rgb[..., 2] - rgb[..., 1] > 60)
  labels, count = ndimage.label(mask)
  assert count > 0, f"no marker in {path}"
  sizes = ndimage.sum(mask, labels, range(1, count + 1))
  largest = int(np.argmax(sizes)) + 1
  y, x = ndimage.center_of_mass(labels == largest)
  return np.array([x, y]), int(sizes[largest - 1])


def test_pair_homography_maps_a_marked_point_from_view_1_to_view_2(tmp_path, monkeypatch):
  # The generator renders a landmark with one marked point; in the JPEGs on disk the
  # marker found in index view 1, mapped by the pair homography, must land on the
  # marker found in index view 2.
  monkeypatch.setattr(demo, "_landmark_image", lambda k: _marker_landmark())
  info = demo.make_demo_dataset(
    tmp_path,
    seed=0,
    num_landmarks=1,
    images_per_landmark=1,
    image_size=(192, 256),
    num_distractors=0,
  )
  id_1, id_2 = info.index_ids
  (found_1, area_1), (found_2, area_2) = (
    _find_marker(info.path("index", id_1)),
    _find_marker(info.path("index", id_2)),
  )
  assert area_1 > 100 and area_2 > 100  # The disc itself, not a stray pixel.
  views = view_homographies.read_view_homographies(tmp_path)
  # Each view's recorded homography puts the marker where the file shows it.
  for image_id, found in ((id_1, found_1), (id_2, found_2)):
    predicted = homography.project_xy(views[image_id].homography, [MARKER_XY])[0]
    assert np.linalg.norm(predicted - found) < 1.0, (image_id, predicted, found)
  pair = view_homographies.pair_homography(views[id_1], views[id_2])
  assert np.linalg.norm(homography.project_xy(pair, [found_1])[0] - found_2) < 1.5
  # The marker moved between the views, and the reverse pair (2 -> 1) misses it: the
  # check can tell a right mapping from a wrong one.
  assert np.linalg.norm(found_1 - found_2) > 10
  reverse = view_homographies.pair_homography(views[id_2], views[id_1])
  assert np.linalg.norm(homography.project_xy(reverse, [found_1])[0] - found_2) > 10


def test_view_homographies_cover_every_landmark_view(tiny):
  views = view_homographies.read_view_homographies(tiny.root)
  readable_train = [i for i in tiny.train_clean_ids if i not in tiny.bad_files]
  noisy_views = [i for i in tiny.noisy_ids if tiny.labels[i] is not None]
  landmark_index_and_test = [i for i in tiny.index_ids + tiny.test_ids if tiny.labels[i]]
  assert set(views) == set(readable_train + noisy_views + landmark_index_and_test)
  for image_id, view in views.items():
    assert view.landmark_id == tiny.labels[image_id]  # The content, also for noisy images.
    assert tiny.path(view.split, image_id).is_file()
    np.testing.assert_array_equal(view.homography, tiny.views[image_id].homography)
    assert np.isclose(view.homography[2, 2], 1.0)


def test_write_pair_homography_for_match_images(tiny, tmp_path):
  by_landmark = {}
  for image_id in tiny.index_ids:
    by_landmark.setdefault(tiny.labels[image_id], []).append(image_id)
  id_1, id_2 = by_landmark[tiny.landmark_ids[0]][:2]
  output = tmp_path / "pair_homography.json"
  written = view_homographies.write_pair_homography(tiny.root, id_1, id_2, output)
  loaded = homography.load_homography(output)
  np.testing.assert_array_equal(loaded, written)
  # H_pair o H_1 = H_2 on the landmark's corners (up to the homogeneous scale).
  corners = np.array([[0.0, 0.0], [199.0, 0.0], [0.0, 149.0], [120.0, 80.0]])
  via_1 = homography.project_xy(loaded, homography.project_xy(tiny.views[id_1].homography, corners))
  np.testing.assert_allclose(
    via_1, homography.project_xy(tiny.views[id_2].homography, corners), atol=1e-6
  )
  other = by_landmark[tiny.landmark_ids[1]][0]
  with pytest.raises(ValueError, match="different landmarks"):
    view_homographies.write_pair_homography(tiny.root, id_1, other, tmp_path / "x.json")
  with pytest.raises(ValueError, match="no recorded homography"):
    view_homographies.write_pair_homography(tiny.root, id_1, "0" * 16, tmp_path / "x.json")
  assert not (tmp_path / "x.json").exists()


def test_missing_view_homographies_file_is_explained(tmp_path):
  with pytest.raises(ValueError, match=r"view_homographies\.json not found"):
    view_homographies.read_view_homographies(tmp_path)
