"""Image loading for extraction (inference.md §2.1).

KB-46 (KEEP, documented): like the reference, importing this module turns on
PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` for the whole process, so a truncated
JPEG decodes (its missing part grey) instead of raising. Features of such
images then match the reference's. Any other code in the same process that
relies on PIL rejecting truncated files sees the same switch.
"""

from __future__ import annotations

import os

from PIL import Image, ImageFile

ImageFile.LOAD_TRUNCATED_IMAGES = True


def RgbLoader(path: str | os.PathLike) -> Image.Image:
  """Opens an image file and returns it as an RGB PIL image (fully decoded).

  Raises:
    OSError / PIL.UnidentifiedImageError: the file is missing or not an image.
  """
  with open(path, "rb") as f:
    image = Image.open(f)
    return image.convert("RGB")
