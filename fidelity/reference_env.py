"""Run the reference implementation and ours side by side, in separate, clean processes.

The reference (``../shared/reference``: the Model Garden's ``research/delf`` with
a few patches so that it runs on TF 2.21 + ``tf_keras``) lives in its own
virtual environment, set up once by its ``setup.sh`` into a directory outside
the repository. Its environment (``PYTHONPATH``, ``TF_USE_LEGACY_KERAS=1``)
must never reach our processes, and ours never its: every command here starts
from a minimal environment and adds only what its side needs.

Reusable outside the fidelity suite (e.g. side-by-side benchmarks in
``bench/``)::

    from fidelity.reference_env import ReferenceEnvironment, run_ours
    ref = ReferenceEnvironment.locate()      # None: ../shared/reference absent
    ref.ensure_setup()                       # ~1-2 min the first time
    ref.run([ref.python, ref.delf_script("training/build_image_dataset.py"), ...])
    run_ours([sys.executable, "scripts/build_image_dataset.py", ...])

Locations (environment variables): ``DELF_REFERENCE_SOURCE`` (default
``<repo>/../shared/reference``), ``DELF_REFERENCE_DIR`` where it is set up
(default ``~/.cache/delf/reference``; must be outside the repository).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SOURCE = os.path.join(os.path.dirname(REPO_ROOT), "shared", "reference")
DEFAULT_HOME = os.path.join(os.path.expanduser("~"), ".cache", "delf", "reference")
_STAMP = ".delf-source-stamp"

# Passed through to both sides; everything else (PYTHONPATH, VIRTUAL_ENV, TF_* ...) is not.
_PASSTHROUGH = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TERM")


class CommandError(RuntimeError):
  """A side's command failed; the message has the command, status and the log's tail."""


def _base_env() -> dict[str, str]:
  env = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  env["CUDA_VISIBLE_DEVICES"] = ""  # CPU on both sides, whatever the machine has.
  env["PYTHONHASHSEED"] = "0"
  env["MPLBACKEND"] = "Agg"
  return env


def ours_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
  """A clean environment for our processes: the repository importable, nothing of the reference."""
  env = _base_env()
  env["PYTHONPATH"] = REPO_ROOT
  env.update(extra or {})
  return env


def _run(
  args: Sequence[str],
  env: Mapping[str, str],
  cwd: str | None,
  log_path: str | None,
  timeout: float | None,
) -> subprocess.CompletedProcess:
  start = time.monotonic()
  log = open(log_path, "w") if log_path else None  # noqa: SIM115 (closed below)
  try:
    if log:
      log.write("$ " + shlex.join(args) + "\n")
      log.flush()
    completed = subprocess.run(
      list(args),
      env=dict(env),
      cwd=cwd or REPO_ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      timeout=timeout,
      check=False,
    )
  finally:
    if log:
      log.close()
  if log_path:
    with open(log_path, "a") as f:
      f.write(completed.stdout)
      f.write(f"\n[exit {completed.returncode} after {time.monotonic() - start:.1f} s]\n")
  if completed.returncode != 0:
    lines = [line for line in completed.stdout.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "no output"
    where = f" (log: {log_path})" if log_path else ""
    program = next((os.path.basename(a) for a in args[1:] if not a.startswith("-")), args[0])
    raise CommandError(
      f"{program} exited with {completed.returncode}{where}: {last}\n"
      f"$ {shlex.join(args)}\n" + "\n".join(lines[-15:])
    )
  return completed


def run_ours(
  args: Sequence[str],
  cwd: str | None = None,
  extra_env: Mapping[str, str] | None = None,
  log_path: str | None = None,
  timeout: float | None = None,
) -> subprocess.CompletedProcess:
  """Runs one of our commands (e.g. ``[sys.executable, "scripts/train.py", ...]``) cleanly."""
  return _run(args, ours_env(extra_env), cwd, log_path, timeout)


def our_python() -> str:
  return sys.executable


def _source_stamp(source: str) -> str:
  """A fingerprint of the reference source tree (names, sizes, mtimes)."""
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(source):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      stat = os.stat(path)
      digest.update(f"{os.path.relpath(path, source)}:{stat.st_size}:{int(stat.st_mtime)}".encode())
  return digest.hexdigest()


@dataclasses.dataclass
class ReferenceEnvironment:
  """The reference's set-up directory and how to run commands in its environment."""

  source: str
  home: str

  @classmethod
  def locate(cls) -> ReferenceEnvironment | None:
    """From ``DELF_REFERENCE_SOURCE`` / ``DELF_REFERENCE_DIR``; None if the source is absent."""
    source = os.path.abspath(os.environ.get("DELF_REFERENCE_SOURCE", DEFAULT_SOURCE))
    if not os.path.isfile(os.path.join(source, "setup.sh")):
      return None
    home = os.path.abspath(os.environ.get("DELF_REFERENCE_DIR", DEFAULT_HOME))
    if os.path.commonpath([home, REPO_ROOT]) == REPO_ROOT:
      raise ValueError(f"DELF_REFERENCE_DIR={home} is inside the repository; choose another")
    return cls(source, home)

  @property
  def python(self) -> str:
    return os.path.join(self.home, "venv", "bin", "python")

  @property
  def delf_root(self) -> str:
    """``research/delf`` of the set-up copy (holds the ``delf`` package)."""
    return os.path.join(self.home, "models", "research", "delf")

  def delf_script(self, relative: str) -> str:
    """A script of the reference under ``delf/python/``, e.g. ``examples/match_images.py``."""
    return os.path.join(self.delf_root, "delf", "python", relative)

  def helper(self, name: str) -> str:
    """One of the helpers ``setup.sh`` copies next to the venv (``train_n.py``, ...)."""
    return os.path.join(self.home, name)

  def is_set_up(self) -> bool:
    return os.path.exists(os.path.join(self.home, "env.sh")) and os.path.exists(self.python)

  def ensure_setup(self, log_path: str | None = None) -> float:
    """Runs ``setup.sh`` unless the directory is already set up from this source.

    A directory set up by someone else (no stamp) is used as it is: re-running
    ``setup.sh`` replaces its code tree, which would disturb other users of it.
    Returns the seconds spent.
    """
    start = time.monotonic()
    stamp_path = os.path.join(self.home, _STAMP)
    stamp = _source_stamp(self.source)
    if self.is_set_up():
      if not os.path.exists(stamp_path):
        return 0.0
      with open(stamp_path) as f:
        if f.read().strip() == stamp:
          return 0.0
    os.makedirs(self.home, exist_ok=True)
    _run(
      ["bash", os.path.join(self.source, "setup.sh"), self.home], _base_env(), None, log_path, None
    )
    with open(stamp_path, "w") as f:
      f.write(stamp + "\n")
    return time.monotonic() - start

  def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The reference's environment (what its ``env.sh`` exports), from a clean base."""
    env = _base_env()
    with open(os.path.join(self.home, "env.sh")) as f:
      for line in f:
        line = line.strip()
        if line.startswith("export ") and "=" in line:
          key, value = line[len("export ") :].split("=", 1)
          env[key] = value.strip().strip('"')
    env.update(extra or {})
    return env

  def run(
    self,
    args: Sequence[str],
    cwd: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    log_path: str | None = None,
    timeout: float | None = None,
  ) -> subprocess.CompletedProcess:
    """Runs a command in the reference's environment (``args[0]`` usually ``self.python``).

    The working directory defaults to the reference's directory: never the repository
    root, whose ``delf/`` package would shadow the reference's on ``sys.path``.
    """
    return _run(args, self.env(extra_env), cwd or self.home, log_path, timeout)
