"""Image resizing before extraction: ``ResizeImage`` (inference.md §2.2, KEEP KB-38, KB-43).

Every rule of the reference is kept, including the surprising ones: both bounds
are compared with the LARGEST side; ``resize_factor`` scales the bounds, not
the image; sizes are rounded half-to-even (Python ``round``); the returned
factors are the actual ratios after rounding; square mode distorts the aspect
ratio. Ours (KB-38): ``resize_factor == 0`` is rejected too (the reference made
a zero-size image and failed inside PIL).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from delf.protos import delf_config_pb2


def ResizeImage(
  image: np.ndarray, config: delf_config_pb2.DelfConfig, resize_factor: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
  """Resizes ``image`` following the config's max/min size and square settings.

  Args:
    image: uint8 [H, W, 3].
    config: DelfConfig; uses ``max_image_size``, ``min_image_size``, ``use_square_images``.
    resize_factor: multiplies both size bounds (must be > 0).

  Returns:
    (resized uint8 image [H', W', 3], float64 [2] scale factors (H'/H, W'/W)).

  Raises:
    ValueError: negative or zero resize_factor, or an image that is not [H, W, 3].
  """
  if resize_factor < 0:
    raise ValueError(f"negative resize_factor is not allowed: {resize_factor}")
  if resize_factor == 0:
    raise ValueError("resize_factor == 0 is not allowed: it would resize to an empty image")
  if image.ndim != 3:
    raise ValueError(f"image must have 3 dimensions [H, W, 3], got shape {image.shape}")
  height, width, channels = image.shape
  if channels != 3:
    raise ValueError(f"image must have 3 channels, got {channels} (shape {image.shape})")

  max_size = resize_factor * config.max_image_size
  min_size = resize_factor * config.min_image_size
  largest_side = max(height, width)
  if max_size >= 0 and largest_side > max_size:
    scale = max_size / largest_side
  elif min_size >= 0 and largest_side < min_size:
    scale = min_size / largest_side
  elif config.use_square_images and height != width:
    scale = 1.0
  else:
    return image, np.array([1.0, 1.0])

  if config.use_square_images:
    new_width = new_height = round(largest_side * scale)
  else:
    new_width = round(width * scale)
    new_height = round(height * scale)
  scale_factors = np.array([new_height / height, new_width / width])
  resized = Image.fromarray(image).resize((new_width, new_height), resample=Image.BILINEAR)
  return np.array(resized), scale_factors
