"""Importing TensorFlow without its C++ start-up noise.

On a machine without a GPU, ``import tensorflow`` prints half a dozen lines from
C++ (oneDNN notices, "Could not find cuda drivers", a failed ``cuInit``, CPU
instruction notes), some of them before TensorFlow's own logging is set up, so
``TF_CPP_MIN_LOG_LEVEL`` alone cannot hide them. The scripts call ``configure``
in ``main``; TensorFlow is then imported through ``import_tensorflow`` with file
descriptor 2 redirected to a temporary file while the libraries load and the
devices are listed, and every captured line that is not one of these known
notices is printed again. ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 (C++ errors still
show).

Escape: ``--verbosity=0`` (or ``-v 0``) or higher on any script, or setting
``TF_CPP_MIN_LOG_LEVEL`` yourself, imports TensorFlow plainly and shows everything.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

DEFAULT_MIN_LOG_LEVEL = "2"
# Start-up lines that say nothing about the user's run.
_NOISE = re.compile(
  r"All log messages before absl::InitializeLog\(\) is called"
  r"|oneDNN custom operations are on"
  r"|Could not find cuda drivers on your machine"
  r"|failed call to cuInit"
  r"|This TensorFlow binary is optimized to use available CPU instructions"
  r"|^To enable the following instructions:"
  r"|Unable to register cu(DNN|FFT|BLAS) factory"
  r"|TF-TRT Warning: Could not find TensorRT"
  r"|computation placer already registered"
)

_quiet = False


def configure(verbosity: int = -1) -> None:
  """Decides, before TensorFlow is imported, whether its start-up lines are hidden.

  Args:
    verbosity: absl's ``--verbosity`` (-1 by default; 0 = info, 1 = debug). At 0
      or above nothing is hidden.
  """
  global _quiet
  if "tensorflow" in sys.modules:
    return
  if verbosity >= 0 or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
    _quiet = False
    return
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = DEFAULT_MIN_LOG_LEVEL
  _quiet = True


def configure_from_flags() -> None:
  """``configure`` with the value of absl's ``--verbosity`` flag (call in ``main``)."""
  from absl import flags

  verbosity = -1
  if "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present:
    verbosity = flags.FLAGS.verbosity
  configure(verbosity)


def is_noise(line: str) -> bool:
  """True for the known start-up notices that ``import_tensorflow`` hides."""
  return bool(_NOISE.search(line))


@contextlib.contextmanager
def _stderr_filtered() -> Iterator[None]:
  """Captures file descriptor 2 and prints back all lines that are not noise."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = capture.read().decode("utf-8", "replace")
      kept = [line for line in text.splitlines() if line.strip() and not is_noise(line)]
      if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)


def import_tensorflow():
  """Imports and returns ``tensorflow``, quietly if ``configure`` asked for it."""
  if "tensorflow" in sys.modules or not _quiet:
    import tensorflow

    return tensorflow
  with _stderr_filtered():
    import tensorflow

    # Device discovery (cuInit) logs too; listing physical devices does not
    # initialise the runtime, so strategies and device settings can still follow.
    tensorflow.config.list_physical_devices()
  return tensorflow
