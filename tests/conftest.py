"""Shared fixtures: the ../shared test data and a quiet TensorFlow."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _shared_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("DELF_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """``../shared`` (or $DELF_SHARED_DIR); tests using it skip where it is absent."""
  path = _shared_dir()
  if not (path / "data").is_dir():
    pytest.skip(f"shared test data not found at {path} (set DELF_SHARED_DIR)")
  return path


@pytest.fixture(scope="session")
def interop_dir(shared_dir: pathlib.Path) -> pathlib.Path:
  """Files written by the reference implementation (../shared/data/interop)."""
  path = shared_dir / "data" / "interop"
  if not path.is_dir():
    pytest.skip(f"reference interop fixtures not found at {path}")
  return path


@pytest.fixture(scope="session")
def real_photos_dir(shared_dir: pathlib.Path) -> pathlib.Path:
  """Real photographs with ground truth (../shared/data/real)."""
  path = shared_dir / "data" / "real"
  if not path.is_dir():
    pytest.skip(f"real test photos not found at {path}")
  return path
