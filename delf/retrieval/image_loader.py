"""GeM-style evaluation image loader (``datasets/utils.py``; inference.md §6.4, §8.9).

``default_loader(path, imsize, bounding_box=None, preprocess=True)`` loads an
RGB image, optionally crops it to ``(x1, y1, x2, y2)`` (scaling ``imsize`` by
``max(crop size) / max(full size)``), then shrinks it with PIL ``thumbnail`` so
that neither side exceeds ``imsize`` (aspect ratio kept; never enlarges).

Differences from the reference (KB-56): the reference passes
``Image.ANTIALIAS``, which Pillow 10 removed; we use ``Image.LANCZOS``, the
same filter. KEEP: the reference's ``preprocess=True`` branch computes Caffe
preprocessing and then discards it, so the raw RGB array is returned for both
values of ``preprocess``; we return the raw RGB array too (without computing
the discarded result).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from delf.extraction.image_io import RgbLoader


def pil_imagenet_loader(
  path: str | os.PathLike,
  imsize: int,
  bounding_box: Sequence[float] | None = None,
  preprocess: bool = True,
) -> np.ndarray:
  """Loads, optionally crops, and shrinks an image; returns uint8 RGB ``[H, W, 3]``.

  Args:
    path: image file.
    imsize: maximum size of the longer side (of the full image; scaled for a crop).
    bounding_box: optional ``(x1, y1, x2, y2)`` crop box (PIL semantics).
    preprocess: accepted for compatibility; has no effect (see the module docstring).
  """
  del preprocess  # The reference computed and discarded it (KB-56, KEEP).
  image = RgbLoader(path)
  if bounding_box is not None:
    full_size = max(image.size)
    image = image.crop(tuple(bounding_box))
    imsize = imsize * max(image.size) / full_size
  image.thumbnail((imsize, imsize), Image.LANCZOS)
  return np.array(image)


default_loader = pil_imagenet_loader
