"""ResizeImage (inference.md §8.4 table and rounding test, KB-38) and RgbLoader (KB-46)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from delf.extraction.image_io import RgbLoader
from delf.extraction.resize import ResizeImage
from delf.protos import delf_config_pb2

# name, max, min, factor, square, expected shape, expected factors (§8.4).
TABLE = [
  ("Max-1Min-1", -1, -1, 1.0, False, [4, 2, 3], [1, 1]),
  ("Max-1Min-1Square", -1, -1, 1.0, True, [4, 4, 3], [1, 2]),
  ("Max2Min-1", 2, -1, 1.0, False, [2, 1, 3], [0.5, 0.5]),
  ("Max2Min-1Square", 2, -1, 1.0, True, [2, 2, 3], [0.5, 1]),
  ("Max8Min-1", 8, -1, 1.0, False, [4, 2, 3], [1, 1]),
  ("Max8Min-1Square", 8, -1, 1.0, True, [4, 4, 3], [1, 2]),
  ("Max-1Min1", -1, 1, 1.0, False, [4, 2, 3], [1, 1]),
  ("Max-1Min1Square", -1, 1, 1.0, True, [4, 4, 3], [1, 2]),
  ("Max-1Min8", -1, 8, 1.0, False, [8, 4, 3], [2, 2]),
  ("Max-1Min8Square", -1, 8, 1.0, True, [8, 8, 3], [2, 4]),
  ("Max16Min8", 16, 8, 1.0, False, [8, 4, 3], [2, 2]),
  ("Max16Min8Square", 16, 8, 1.0, True, [8, 8, 3], [2, 4]),
  ("Max2Min2", 2, 2, 1.0, False, [2, 1, 3], [0.5, 0.5]),
  ("Max2Min2Square", 2, 2, 1.0, True, [2, 2, 3], [0.5, 1]),
  ("Max-1Min-1Factor0.5", -1, -1, 0.5, False, [4, 2, 3], [1, 1]),
  ("Max-1Min-1Factor0.5Square", -1, -1, 0.5, True, [4, 4, 3], [1, 2]),
  ("Max2Min-1Factor2.0", 2, -1, 2.0, False, [4, 2, 3], [1, 1]),
  ("Max2Min-1Factor2.0Square", 2, -1, 2.0, True, [4, 4, 3], [1, 2]),
  ("Max-1Min8Factor0.5", -1, 8, 0.5, False, [4, 2, 3], [1, 1]),
  ("Max-1Min8Factor0.5Square", -1, 8, 0.5, True, [4, 4, 3], [1, 2]),
  ("Max-1Min8Factor0.25", -1, 8, 0.25, False, [4, 2, 3], [1, 1]),
  ("Max-1Min8Factor0.25Square", -1, 8, 0.25, True, [4, 4, 3], [1, 2]),
  ("Max2Min2Factor2.0", 2, 2, 2.0, False, [4, 2, 3], [1, 1]),
  ("Max2Min2Factor2.0Square", 2, 2, 2.0, True, [4, 4, 3], [1, 2]),
  ("Max16Min8Factor0.5", 16, 8, 0.5, False, [4, 2, 3], [1, 1]),
  ("Max16Min8Factor0.5Square", 16, 8, 0.5, True, [4, 4, 3], [1, 2]),
]


def _config(max_size, min_size, square):
  return delf_config_pb2.DelfConfig(
    max_image_size=max_size, min_image_size=min_size, use_square_images=square
  )


@pytest.mark.parametrize(
  "max_size,min_size,factor,square,shape,factors", [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_resize_image_table(max_size, min_size, factor, square, shape, factors):
  image = np.zeros([4, 2, 3], dtype=np.uint8)
  resized, scale_factors = ResizeImage(image, _config(max_size, min_size, square), factor)
  assert list(resized.shape) == shape
  assert resized.dtype == np.uint8
  np.testing.assert_allclose(scale_factors, factors)


@pytest.mark.parametrize(
  "square,shape,factors",
  [
    (False, [2, 1, 3], [0.666666, 0.5]),
    (True, [2, 2, 3], [0.666666, 1.0]),
  ],
)
def test_resize_image_rounding(square, shape, factors):
  image = np.zeros([3, 2, 3], dtype=np.uint8)
  resized, scale_factors = ResizeImage(image, _config(2, 2, square))
  assert list(resized.shape) == shape
  np.testing.assert_allclose(scale_factors, factors, rtol=1e-5)


def test_unchanged_image_is_returned_as_is():
  image = np.arange(24, dtype=np.uint8).reshape(4, 2, 3)
  resized, scale_factors = ResizeImage(image, delf_config_pb2.DelfConfig())
  assert resized is image
  assert scale_factors.dtype == np.float64


def test_half_to_even_rounding_and_bilinear_values():
  # 10x5 with max 3: s = 0.3, width 1.5 rounds to 2 (half to even), height 3.
  image = np.full([10, 5, 3], 200, dtype=np.uint8)
  resized, scale_factors = ResizeImage(image, _config(3, -1, False))
  assert resized.shape == (3, 2, 3)
  np.testing.assert_allclose(scale_factors, [0.3, 0.4])
  assert (resized == 200).all()  # Bilinear of a constant image is the constant.
  # 3x5 with max 5 and factor 0.5: s = 0.5; width 2.5 -> 2 and height 1.5 -> 2 (half to even).
  resized, scale_factors = ResizeImage(np.zeros([3, 5, 3], np.uint8), _config(5, -1, False), 0.5)
  assert resized.shape == (2, 2, 3)
  np.testing.assert_allclose(scale_factors, [2 / 3, 0.4])


def test_resize_errors():
  image = np.zeros([4, 2, 3], dtype=np.uint8)
  with pytest.raises(ValueError, match="negative resize_factor is not allowed"):
    ResizeImage(image, _config(-1, -1, False), -1.0)
  with pytest.raises(ValueError, match="resize_factor == 0"):
    ResizeImage(image, _config(-1, -1, False), 0.0)
  with pytest.raises(ValueError, match="3 dimensions"):
    ResizeImage(np.zeros([4, 2], np.uint8), _config(-1, -1, False))
  with pytest.raises(ValueError, match="3 channels"):
    ResizeImage(np.zeros([4, 2, 4], np.uint8), _config(-1, -1, False))


def test_rgb_loader_converts_and_decodes_truncated_jpeg(tmp_path):
  gray = tmp_path / "gray.png"
  Image.fromarray(np.full([6, 5], 77, np.uint8)).save(gray)
  loaded = RgbLoader(str(gray))
  assert loaded.mode == "RGB" and np.array(loaded).shape == (6, 5, 3)
  assert (np.array(loaded) == 77).all()
  buffer = io.BytesIO()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, [64, 64, 3], dtype=np.uint8)).save(buffer, "JPEG")
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
  assert np.array(RgbLoader(str(truncated))).shape == (64, 64, 3)  # KB-46: decodes.
  with pytest.raises(OSError):
    RgbLoader(str(tmp_path / "missing.jpg"))
  not_image = tmp_path / "text.jpg"
  not_image.write_text("hello")
  with pytest.raises(OSError):
    RgbLoader(str(not_image))
