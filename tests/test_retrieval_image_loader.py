"""GeM-style evaluation loader: the reference's utils_test (inference.md §8.9; KB-56)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from delf.retrieval import image_loader


def _saved_image(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, size=(1024, 750, 3), dtype=np.uint8)
  path = tmp_path / "image.png"
  Image.fromarray(image).save(path)
  return image, path


def test_default_loader_keeps_a_fitting_image_exactly(tmp_path):
  image, path = _saved_image(tmp_path)
  loaded = image_loader.default_loader(str(path), imsize=1024, preprocess=False)
  np.testing.assert_array_equal(loaded, image)
  assert max(loaded.shape[:2]) <= 1024
  # preprocess=True returns the same raw RGB array (the reference discards its result).
  np.testing.assert_array_equal(image_loader.default_loader(str(path), imsize=1024), image)


def test_default_loader_with_bounding_box(tmp_path):
  image, path = _saved_image(tmp_path)
  loaded = image_loader.default_loader(
    str(path), imsize=1024, bounding_box=[120, 120, 520, 520], preprocess=False
  )
  assert loaded.shape == (400, 400, 3)
  np.testing.assert_array_equal(loaded, image[120:520, 120:520])


def test_default_loader_shrinks_with_lanczos(tmp_path):
  image, path = _saved_image(tmp_path)
  loaded = image_loader.default_loader(str(path), imsize=512)
  assert loaded.shape == (512, 375, 3)
  expected = Image.fromarray(image)
  expected.thumbnail((512, 512), Image.LANCZOS)
  np.testing.assert_array_equal(loaded, np.asarray(expected))
