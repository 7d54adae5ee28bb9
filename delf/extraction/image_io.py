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


_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG", b"IEND"
_TAIL = 64


def truncation(path: str | os.PathLike) -> str | None:
  """Says why a JPEG or PNG file looks cut short (no end marker), or None.

  Such files still decode here (KB-46: the missing part is grey), but the features
  of a partly grey image are worth a warning.
  """
  try:
    with open(path, "rb") as f:
      head = f.read(4)
      f.seek(0, os.SEEK_END)
      size = f.tell()
      f.seek(max(0, size - _TAIL))
      tail = f.read()
  except OSError:
    return None  # the loader reports unreadable files
  if head.startswith(_JPEG_START) and _JPEG_END not in tail:
    return "truncated JPEG (no end-of-image marker); extracted with its missing part grey"
  if head.startswith(_PNG_START) and _PNG_END not in tail:
    return "truncated PNG (no IEND chunk); extracted with its missing part grey"
  return None


def RgbLoader(path: str | os.PathLike) -> Image.Image:
  """Opens an image file and returns it as an RGB PIL image (fully decoded).

  Raises:
    OSError / PIL.UnidentifiedImageError: the file is missing or not an image.
  """
  with open(path, "rb") as f:
    image = Image.open(f)
    return image.convert("RGB")
