"""GLDv2 training CSVs and image discovery for the dataset build (training.md §3.2).

Two modes, as in the reference:

* full-CSV mode (``train.csv``: ``id,url,landmark_id``): every globbed image gets
  the raw ``landmark_id`` of its id; images are kept in discovery order.
* clean mode (``train_clean.csv``: ``landmark_id,images``): images are taken in CSV
  order (a duplicated id keeps its first position and its last label) and labels
  are remapped to ``sorted(set(labels))`` positions (KEEP, KB-8).

Where the reference raised ``KeyError`` on ids without files or files without a
CSV row (KB-3), we return those ids so the build can skip and report them. The
clean relabelling uses every id listed in the CSV, present or not, so
``relabeling.csv`` does not depend on which images were downloaded.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import os
from collections.abc import Iterator

csv.field_size_limit(1 << 30)  # train_clean.csv rows list thousands of ids.


class CsvFormatError(ValueError):
  """A CSV lacks the expected columns or holds a malformed value."""


@dataclasses.dataclass
class ImageList:
  """Images to write, in output order, plus what had to be left out.

  Attributes:
    paths / ids / labels: parallel lists in output order.
    missing: ``(id, reason)`` of listed images that cannot be written.
    relabeling: ``(new_label, old_label)`` pairs (clean mode only), or None.
    heights / widths: image sizes, filled once the images were decoded.
  """

  paths: list[str]
  ids: list[str]
  labels: list[int]
  missing: list[tuple[str, str]]
  relabeling: list[tuple[int, int]] | None = None
  heights: list[int] = dataclasses.field(default_factory=list)
  widths: list[int] = dataclasses.field(default_factory=list)


def discover_images(directory: str) -> dict[str, str]:
  """Maps image id -> path for ``<directory>/*.jpg`` (``directory`` may be a glob).

  The id is the file name without its last 4 characters (``.jpg``), as in the
  reference. Paths are returned in sorted order so runs are reproducible
  (TensorFlow's glob order is unspecified and differs between file systems).
  """
  paths = sorted(glob.glob(os.path.join(directory, "*.jpg")))
  return {os.path.basename(p)[:-4]: p for p in paths}


@contextlib.contextmanager
def _open_csv(path: str, required: tuple[str, ...]) -> Iterator[csv.DictReader]:
  try:
    f = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
  except OSError as e:
    raise CsvFormatError(f"{path}: cannot open CSV ({e.strerror or e})") from None
  with f:
    reader = csv.DictReader(f)
    fields = reader.fieldnames or []
    lacking = [c for c in required if c not in fields]
    if lacking:
      raise CsvFormatError(f"{path}: missing column(s) {lacking}; found {fields}")
    yield reader


def _int_label(path: str, line: int, value: str) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    raise CsvFormatError(f"{path}:{line}: landmark_id {value!r} is not an integer") from None


def read_train_csv(path: str) -> dict[str, int]:
  """``train.csv`` -> {id: landmark_id} (a repeated id keeps its last label)."""
  with _open_csv(path, ("id", "landmark_id")) as reader:
    return {row["id"]: _int_label(path, n + 2, row["landmark_id"]) for n, row in enumerate(reader)}


def read_clean_csv(path: str) -> dict[str, int]:
  """``train_clean.csv`` -> {id: label} in CSV order (first position, last label wins)."""
  labels: dict[str, int] = {}
  with _open_csv(path, ("landmark_id", "images")) as reader:
    for n, row in enumerate(reader):
      label = _int_label(path, n + 2, row["landmark_id"])
      for image_id in (row["images"] or "").split():
        labels[image_id] = label
  return labels


def relabel(labels: list[int]) -> tuple[dict[int, int], list[tuple[int, int]]]:
  """Contiguous labels: old -> position in ``sorted(set(labels))`` (KEEP, KB-8)."""
  unique = sorted(set(labels))
  mapping = {old: new for new, old in enumerate(unique)}
  return mapping, [(new, old) for new, old in enumerate(unique)]


def full_csv_images(image_dir: str, csv_path: str) -> ImageList:
  """Full-CSV mode: globbed images with raw landmark ids, in discovery order."""
  labels = read_train_csv(csv_path)
  result = ImageList([], [], [], [])
  for image_id, path in discover_images(image_dir).items():
    if image_id not in labels:
      result.missing.append((image_id, f"not listed in {os.path.basename(csv_path)}"))
      continue
    result.paths.append(path)
    result.ids.append(image_id)
    result.labels.append(labels[image_id])
  return result


def clean_csv_images(image_dir: str, clean_csv_path: str) -> ImageList:
  """Clean mode: CSV order, relabelled; ids without a file are reported, not fatal."""
  listed = read_clean_csv(clean_csv_path)
  mapping, relabeling = relabel(list(listed.values()))
  on_disk = discover_images(image_dir)
  result = ImageList([], [], [], [], relabeling)
  for image_id, label in listed.items():
    path = on_disk.get(image_id)
    if path is None:
      result.missing.append((image_id, "listed in the clean CSV but no file found"))
      continue
    result.paths.append(path)
    result.ids.append(image_id)
    result.labels.append(mapping[label])
  return result


def unlabelled_images(image_dir: str) -> ImageList:
  """Test split: every globbed image, no labels (the test CSV is never read)."""
  found = discover_images(image_dir)
  return ImageList(list(found.values()), list(found), [], [])
