"""Shared state of one fidelity run: work directory, logs, and running both sides at once."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence

from fidelity.reference_env import REPO_ROOT, ReferenceEnvironment, run_ours


@dataclasses.dataclass
class Context:
  """Where a run writes (outside the repository) and how it starts each side's processes."""

  workdir: str
  reference: ReferenceEnvironment

  def path(self, *parts: str) -> str:
    path = os.path.join(self.workdir, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path

  def log(self, name: str) -> str:
    return self.path("logs", name + ".log")

  def ref(self, name: str, args: Sequence[str], **kwargs):
    """A command in the reference's environment; ``args[0]`` is a script or ``-m``/``-c``."""
    return self.reference.run([self.reference.python, *args], log_path=self.log(name), **kwargs)

  def ref_side(self, name: str, script: str, args: Sequence[str], **kwargs):
    """One of our driver scripts in ``fidelity/reference_side/``, run by the reference."""
    path = os.path.join(REPO_ROOT, "fidelity", "reference_side", script)
    return self.ref(name, [path, *args], **kwargs)

  def ours(self, name: str, args: Sequence[str], **kwargs):
    """``python <args>`` in our clean environment (``args[0]``: ``scripts/x.py`` or ``-m``)."""
    return run_ours([sys.executable, *args], log_path=self.log(name), **kwargs)

  def our_side(self, name: str, module: str, args: Sequence[str], **kwargs):
    return self.ours(name, ["-m", f"fidelity.our_side.{module}", *args], **kwargs)


def side_by_side(reference: Callable[[], object], ours: Callable[[], object]):
  """Runs the two sides' work at the same time (one thread each); returns both results.

  Both run to the end even if one fails; the first failure is then raised.
  """
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    futures = [pool.submit(reference), pool.submit(ours)]
    concurrent.futures.wait(futures)
  results = []
  for future in futures:
    error = future.exception()
    if error is not None:
      raise error
    results.append(future.result())
  return tuple(results)


class Stopwatch:
  """Seconds since creation, for progress lines."""

  def __init__(self):
    self.start = time.monotonic()

  def __str__(self) -> str:
    return f"{time.monotonic() - self.start:.0f} s"


def progress(message: str) -> None:
  print(f"[fidelity] {message}", flush=True)


@contextlib.contextmanager
def quiet_stderr():
  """Hides what native code writes to stderr meanwhile (TensorFlow's start-up lines)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with open(os.devnull, "w") as devnull:
    os.dup2(devnull.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)
