"""Atomic file writing: a crash never leaves a half-written output file.

Every writer in the package goes through here. Data is written to a temporary
file in the destination folder and moved into place with ``os.replace``, which
is atomic on POSIX file systems, so readers see either the old file or the
complete new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO


def current_umask() -> int:
  """The process umask (reading it requires setting it; restored at once)."""
  umask = os.umask(0)
  os.umask(umask)
  return umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
  """Opens a temporary file that replaces ``path`` only if the block succeeds."""
  path = os.fspath(path)
  directory = os.path.dirname(path) or "."
  fd, tmp_path = tempfile.mkstemp(
    prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
  )
  try:
    # mkstemp creates the file with mode 0600; give it the permissions a plain
    # open() would (0666 minus the umask), so outputs stay readable by others.
    os.fchmod(fd, 0o666 & ~current_umask())
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp_path)
    raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically."""
  with atomic_output(path, "wb") as f:
    f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically."""
  with atomic_output(path, "w") as f:
    f.write(text)
