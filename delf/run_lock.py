"""One run at a time per output folder: an advisory lock a crashed run cannot leave stuck.

Two ``train.py`` runs on the same ``--logdir`` (or two builds into the same
``--output_directory``) would write over each other's files. The lock is
``fcntl.flock`` on a small file inside the folder: the kernel releases it when
the process ends, however it ends (crash, ``kill -9``, power loss), so a stale
lock never blocks the next run. The file holds the holder's pid, host, start time
and command line for the error message; its presence alone means nothing.
Where ``fcntl`` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys

try:
  import fcntl
except ImportError:  # pragma: no cover - Windows
  fcntl = None


class LockedError(RuntimeError):
  """Another live process holds the lock."""


class RunLock:
  """An acquired lock; ``release()`` (or process exit) frees it."""

  def __init__(self, path: str, fd: int | None):
    self.path = path
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor drops the flock
      self._fd = None

  def __enter__(self) -> RunLock:
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _holder(fd: int) -> str:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
  except OSError:
    text = ""
  return text or "another process"


def acquire(path: str, what: str) -> RunLock:
  """Takes the lock at ``path`` without waiting.

  Args:
    path: the lock file (created if missing).
    what: what is locked, for the message, e.g. ``"--logdir=/x"``.

  Raises:
    LockedError: one line naming ``what`` and the process that holds it.
  """
  if fcntl is None:  # pragma: no cover
    return RunLock(path, None)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _holder(fd)
    os.close(fd)
    raise LockedError(
      f"{what} is in use by a run that is still going ({holder}); wait for it to finish, "
      f"stop it, or use another folder (lock file {path})"
    ) from None
  except OSError:
    # A file system without flock support (some network mounts): run unlocked.
    return RunLock(path, fd)
  started = datetime.datetime.now().isoformat(timespec="seconds")
  info = f"pid {os.getpid()} on {socket.gethostname()} since {started}: {' '.join(sys.argv)}"
  os.ftruncate(fd, 0)
  os.pwrite(fd, info[:4000].encode("utf-8", "replace") + b"\n", 0)
  return RunLock(path, fd)
