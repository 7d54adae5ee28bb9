"""``dataset_metadata.json``: the dataset build describes what it wrote.

Training reads the class count from here instead of trusting ``--dataset_version``
(the usual cause of out-of-range labels, KB-10), and users can see how a set of
shards was made.

Since format 2 it is also the build's manifest: ``files`` maps every shard name
to its split, example count and size in bytes. The build writes it last, so
``verify_shards`` can tell a complete build from a folder that holds shards of
two builds (an interrupted build, another ``--num_shards``) or a damaged shard,
and training can refuse to start on such a folder.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from delf import atomic_io

METADATA_FILENAME = "dataset_metadata.json"
FORMAT_VERSION = 2
SHARD_NAME = re.compile(r"^(train|validation|test)-\d{5}-of-\d{5}$")
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


@dataclasses.dataclass
class ShardSet:
  """Shard files a file pattern matched, checked against the build's manifest.

  ``num_examples`` comes from the manifest, or from counting the records of
  shards built without one (the reference's); None where it cannot be known.
  """

  files: list[str]
  num_examples: int | None
  manifests: list[str]


def _manifest(directory: str) -> tuple[str, dict[str, Any]] | None:
  path = os.path.join(directory, METADATA_FILENAME)
  if not os.path.isfile(path):
    return None
  metadata = read_metadata(path)
  files = (metadata or {}).get("files")
  return (path, files) if isinstance(files, dict) else None


def verify_shards(files: Sequence[str], flag: str) -> ShardSet:
  """Checks that ``files`` (matched by ``flag``) are whole shards of one complete build.

  Args:
    files: the matched shard paths (local files).
    flag: how the user named them, e.g. ``--train_file_pattern=out/train*``.

  Raises:
    ValueError: one line naming the file and what is wrong: not in the build's
      manifest (a leftover of another build, or not a shard), a size that differs
      from the manifest (a mix of builds, a damaged shard), a shard of the manifest
      that is missing, or damaged record framing in a shard without a manifest.
  """
  from delf.data import tfrecord

  by_directory: dict[str, list[str]] = collections.defaultdict(list)
  for path in files:
    by_directory[os.path.dirname(os.path.abspath(path))].append(path)
  total: int | None = 0
  manifests = []
  for directory, paths in by_directory.items():
    found = _manifest(directory)
    if found is None:
      for path in paths:
        if "://" in path:
          total = None
        elif total is not None:
          try:
            total += tfrecord.count_records(path)
          except ValueError as e:
            raise ValueError(f"damaged TFRecord shard {e} (matched by {flag})") from None
      continue
    metadata_path, manifest = found
    manifests.append(metadata_path)
    splits = set()
    for path in paths:
      name = os.path.basename(path)
      entry = manifest.get(name)
      if entry is None:
        raise ValueError(
          f"{flag} matches {path}, which is not a shard of the build described by "
          f"{metadata_path} (a leftover of another build?); remove it or use a narrower pattern"
        )
      size = os.path.getsize(path)
      if size != entry["bytes"]:
        raise ValueError(
          f"{path} has {size} bytes but {metadata_path} records {entry['bytes']}: the folder "
          "holds parts of two builds (an interrupted build?) or a damaged shard; run "
          "build_image_dataset.py again"
        )
      splits.add(entry["split"])
      if total is not None:
        total += int(entry["examples"])
    for name, entry in sorted(manifest.items()):
      if entry["split"] in splits and not os.path.exists(os.path.join(directory, name)):
        raise ValueError(
          f"{os.path.join(directory, name)} is listed in {metadata_path} but missing: the "
          "build is incomplete; run build_image_dataset.py again"
        )
  return ShardSet(files=list(files), num_examples=total, manifests=manifests)
