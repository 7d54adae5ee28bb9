"""GLDv2 training CSVs and image discovery for the dataset build (training.md §3.2).

Two modes, as in the reference:

* full-CSV mode (``train.csv``: ``id,url,landmark_id``): every globbed image gets
  the raw ``landmark_id`` of its id; images are kept in discovery order.
* clean mode (``train_clean.csv``: ``landmark_id,images``): images are taken in CSV
  order (a duplicated id keeps its first position and its last label) and labels
  are remapped to ``sorted(set(labels))`` positions (KEEP, KB-8).

Where the reference raised ``KeyError`` on ids without files or files without a
CSV row (KB-3), we return those ids so the build can skip and report them (in
both modes: in full-CSV mode the ids of ``train.csv`` without a file too). The
clean relabelling uses every id listed in the CSV, present or not, so
``relabeling.csv`` does not depend on which images were downloaded.

Malformed CSVs are refused with the file and line: a CSV with a header but no
row, a negative or non-integer ``landmark_id``, a row with more or fewer cells
than the header (e.g. an unquoted comma). A UTF-8 byte-order mark is accepted.
A clean-CSV row that lists no image is reported (``empty_rows``) and, as in the
reference, contributes nothing.
"""

from __future__ import annotations

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
  listed: int = 0  # ids the CSV lists (after the duplicate rule)
  found: int = 0  # files the directory glob found
  empty_rows: list[str] = dataclasses.field(default_factory=list)  # "path:line: landmark_id N"


def discover_images(directory: str) -> dict[str, str]:
  """Maps image id -> path for ``<directory>/*.jpg`` (``directory`` may be a glob).

  The id is the file name without its last 4 characters (``.jpg``), as in the
  reference. Paths are returned in sorted order so runs are reproducible
  (TensorFlow's glob order is unspecified and differs between file systems).
  """
  paths = sorted(glob.glob(os.path.join(directory, "*.jpg")))
  return {os.path.basename(p)[:-4]: p for p in paths}


def _rows(path: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
  """Yields ``(line number, row)``; refuses malformed rows and a CSV without rows."""
  try:
    # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column name.
    f = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
  except OSError as e:
    raise CsvFormatError(f"{path}: cannot open CSV ({e.strerror or e})") from None
  with f:
    reader = csv.DictReader(f)
    try:
      fields = reader.fieldnames or []
      lacking = [c for c in required if c not in fields]
      if lacking:
        raise CsvFormatError(f"{path}: missing column(s) {lacking}; found {fields}")
      count = 0
      for row in reader:
        line = reader.line_num
        if None in row:  # more cells than header columns
          raise CsvFormatError(
            f"{path}:{line}: {len(fields) + len(row[None])} cells but the header has "
            f"{len(fields)} columns {fields} (an unquoted comma?)"
          )
        short = [c for c in required if row.get(c) is None]
        if short:
          raise CsvFormatError(
            f"{path}:{line}: fewer cells than the header's {len(fields)} columns {fields}"
          )
        count += 1
        yield line, row
    except UnicodeDecodeError as e:
      raise CsvFormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
      raise CsvFormatError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    if count == 0:
      raise CsvFormatError(f"{path}: the CSV has a header but no data rows")


def _int_label(path: str, line: int, value: str) -> int:
  try:
    label = int(value)
  except (TypeError, ValueError):
    raise CsvFormatError(f"{path}:{line}: landmark_id {value!r} is not an integer") from None
  if label < 0:
    raise CsvFormatError(f"{path}:{line}: landmark_id {label} is negative")
  return label


def read_train_csv(path: str) -> dict[str, int]:
  """``train.csv`` -> {id: landmark_id} (a repeated id keeps its last label)."""
  return {
    row["id"]: _int_label(path, line, row["landmark_id"])
    for line, row in _rows(path, ("id", "landmark_id"))
  }


def read_clean_csv(path: str, empty_rows: list[str] | None = None) -> dict[str, int]:
  """``train_clean.csv`` -> {id: label} in CSV order (first position, last label wins).

  Rows without any image id are appended to ``empty_rows`` (as ``path:line:
  landmark_id N``) when given.
  """
  labels: dict[str, int] = {}
  for line, row in _rows(path, ("landmark_id", "images")):
    label = _int_label(path, line, row["landmark_id"])
    ids = (row["images"] or "").split()
    if not ids and empty_rows is not None:
      empty_rows.append(f"{path}:{line}: landmark_id {label}")
    for image_id in ids:
      labels[image_id] = label
  return labels


def relabel(labels: list[int]) -> tuple[dict[int, int], list[tuple[int, int]]]:
  """Contiguous labels: old -> position in ``sorted(set(labels))`` (KEEP, KB-8)."""
  unique = sorted(set(labels))
  mapping = {old: new for new, old in enumerate(unique)}
  return mapping, [(new, old) for new, old in enumerate(unique)]


def full_csv_images(image_dir: str, csv_path: str) -> ImageList:
  """Full-CSV mode: globbed images with raw landmark ids, in discovery order.

  Files without a CSV row and CSV ids without a file (KB-3) are both reported
  in ``missing``.
  """
  labels = read_train_csv(csv_path)
  on_disk = discover_images(image_dir)
  result = ImageList([], [], [], [], listed=len(labels), found=len(on_disk))
  name = os.path.basename(csv_path)
  # One string per reason: with a partial download millions of ids have no file.
  unlisted, no_file = f"not listed in {name}", f"listed in {name} but no file found"
  for image_id, path in on_disk.items():
    if image_id not in labels:
      result.missing.append((image_id, unlisted))
      continue
    result.paths.append(path)
    result.ids.append(image_id)
    result.labels.append(labels[image_id])
  result.missing += [(image_id, no_file) for image_id in labels if image_id not in on_disk]
  return result


def clean_csv_images(image_dir: str, clean_csv_path: str) -> ImageList:
  """Clean mode: CSV order, relabelled; ids without a file are reported, not fatal."""
  empty_rows: list[str] = []
  listed = read_clean_csv(clean_csv_path, empty_rows)
  mapping, relabeling = relabel(list(listed.values()))
  on_disk = discover_images(image_dir)
  result = ImageList(
    [], [], [], [], relabeling, listed=len(listed), found=len(on_disk), empty_rows=empty_rows
  )
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
  return ImageList(list(found.values()), list(found), [], [], found=len(found))
