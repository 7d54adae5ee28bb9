"""Demo GLDv2 data: layout, CSV formats, determinism, and the view renderer's homography."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image
from skimage import transform

from delf.data import build, demo
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
  for rel in ("train/train.csv", "train/train_clean.csv", "test/test.csv", "index/index.csv"):
    assert (tmp_path / "cli" / rel).read_bytes() == (info.root / rel).read_bytes(), rel
