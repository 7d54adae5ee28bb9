"""``dataset_metadata.json``: the dataset build describes what it wrote.

Training reads the class count from here instead of trusting ``--dataset_version``
(the usual cause of out-of-range labels, KB-10), and users can see how a set of
shards was made.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

from delf import atomic_io

METADATA_FILENAME = "dataset_metadata.json"
FORMAT_VERSION = 1
_GLOB_CHARS = "*?["


def write_metadata(directory: str, metadata: dict[str, Any]) -> str:
  """Writes ``metadata`` (plus ``format_version``) atomically; returns the path."""
  path = os.path.join(directory, METADATA_FILENAME)
  content = {"format_version": FORMAT_VERSION, **metadata}
  atomic_io.write_text_atomic(
    path, json.dumps(content, indent=2, sort_keys=True, default=str) + "\n"
  )
  return path


def _candidate_directories(directory_or_file_pattern: str) -> list[str]:
  target = os.fspath(directory_or_file_pattern)
  if os.path.isdir(target):
    return [target]
  if os.path.basename(target) == METADATA_FILENAME:
    return [os.path.dirname(target) or "."]
  directory = os.path.dirname(target) or "."
  if any(c in directory for c in _GLOB_CHARS):
    return sorted(d for d in glob.glob(directory) if os.path.isdir(d))
  return [directory]


def read_metadata(directory_or_file_pattern: str) -> dict[str, Any] | None:
  """Finds and reads the metadata next to the shards, or returns None if there is none.

  Args:
    directory_or_file_pattern: the build's output directory, a shard file
      pattern such as ``out/train-*``, or the metadata file itself.

  Raises:
    ValueError: the file exists but is not valid JSON, or has a newer format.
  """
  for directory in _candidate_directories(directory_or_file_pattern):
    path = os.path.join(directory, METADATA_FILENAME)
    if not os.path.isfile(path):
      continue
    try:
      with open(path, encoding="utf-8") as f:
        metadata = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"{path}: unreadable dataset metadata ({e})") from None
    if not isinstance(metadata, dict) or metadata.get("format_version", 0) > FORMAT_VERSION:
      raise ValueError(f"{path}: unsupported dataset metadata format")
    return metadata
  return None
