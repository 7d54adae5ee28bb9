"""The dataset build: GLDv2 images + CSVs -> sharded TFRecords (training.md §3).

Same output as the reference for valid, complete input (same examples, shards,
order and ``relabeling.csv``), with these differences:

* KB-3/KB-4: ids without files, files without CSV rows and images that do not
  decode as JPEG are skipped, listed in ``skipped_images.csv`` and counted in one
  summary line, instead of aborting the build. Grayscale/CMYK JPEGs decode with
  3 channels forced and are kept (original bytes, as the reference).
* KB-6: two parallel passes over worker processes — first every image is decoded
  once to validate it and read its size, then the shards are written, one shard
  per task, each atomically. Workers hold one image at a time, so memory does not
  grow with the dataset. Shard contents do not depend on the number of workers.
* KB-7: also prints how many classes got no training image.
* ``dataset_metadata.json`` records the class count, split sizes and flags.

Validation uses Pillow and the TFRecords are written by ``delf.data.tfrecord``,
so no worker imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence

from PIL import Image, ImageFile

from delf import atomic_io
from delf.data import gldv2_csv, metadata, split, tfrecord
from delf.progress import ProgressReporter

SKIPPED_FILENAME = "skipped_images.csv"
RELABELING_FILENAME = "relabeling.csv"
_VALIDATE_CHUNK = 32
_MAX_PRINTED_PROBLEMS = 20


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  """Settings of one build; field names are the ``build_image_dataset`` flags."""

  train_directory: str = "/tmp/"
  output_directory: str = "/tmp/"
  train_csv_path: str = "/tmp/train.csv"
  train_clean_csv_path: str | None = None
  test_csv_path: str | None = None
  test_directory: str | None = None
  num_shards: int = 128
  generate_train_validation_splits: bool = False
  validation_split_size: float = 0.2
  seed: int = 0
  num_workers: int | None = None  # None: all cores.


@dataclasses.dataclass
class BuildSummary:
  """What a build wrote."""

  num_examples: dict[str, int]
  num_classes: int
  skipped: list[tuple[str, str, str]]  # (id, reason, path)
  classes_without_train_images: int
  shard_paths: dict[str, list[str]]
  metadata_path: str


@contextlib.contextmanager
def _truncated_images_rejected():
  """Makes Pillow raise on truncated data while validating.

  The extraction side turns on Pillow's process-wide "load truncated images"
  switch (KB-46); TensorFlow's decoder would still fail on such a file at
  training time, so the build must reject it whatever that switch says.
  """
  previous = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    yield
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = previous


def validate_image(path: str) -> tuple[int, int, str | None]:
  """Decodes ``path`` as the pipeline will; returns ``(height, width, problem or None)``."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    return 0, 0, f"cannot read file ({e.strerror or e})"
  if not data:
    return 0, 0, "empty file"
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.format != "JPEG":
        return 0, 0, f"not a JPEG (found {image.format or 'unknown'} data)"
      width, height = image.size
      # Decoding at reduced scale still reads every byte (truncation is caught).
      image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
      with _truncated_images_rejected():
        image.load()
      if image.mode not in ("RGB", "L", "CMYK"):
        return 0, 0, f"unsupported JPEG colour mode {image.mode}"
  except Exception as e:  # Pillow raises many types for bad data.
    return 0, 0, f"cannot decode JPEG ({e})"
  if height <= 0 or width <= 0:
    return 0, 0, "image has no pixels"
  return height, width, None


def _validate_chunk(paths: Sequence[str]) -> list[tuple[int, int, str | None]]:
  return [validate_image(p) for p in paths]


@dataclasses.dataclass(frozen=True)
class _ShardTask:
  output_path: str
  paths: list[str]
  ids: list[str]
  labels: list[int] | None
  heights: list[int]
  widths: list[int]


def _write_shard(task: _ShardTask) -> tuple[int, list[tuple[str, str, str]]]:
  """Writes one shard atomically; returns (records written, files that vanished)."""
  problems = []

  def records():
    for n, (path, image_id) in enumerate(zip(task.paths, task.ids)):
      try:
        with open(path, "rb") as f:
          encoded = f.read()
      except OSError as e:
        problems.append((image_id, f"cannot read file ({e.strerror or e})", path))
        continue
      features = {
        "image/height": task.heights[n],
        "image/width": task.widths[n],
        "image/colorspace": b"RGB",
        "image/channels": 3,
        "image/format": b"JPEG",
        "image/id": image_id.encode("utf-8"),
        "image/encoded": encoded,
      }
      if task.labels is not None:
        features["image/class/label"] = task.labels[n]
      yield tfrecord.serialize_example(features)

  count = tfrecord.write_tfrecord(task.output_path, records())
  return count, problems


def _pool(num_workers: int):
  # Forking a process that already runs TensorFlow threads is unsafe; the
  # workers never need TensorFlow, so spawn fresh interpreters in that case.
  method = "spawn" if "tensorflow" in sys.modules else "fork"
  return multiprocessing.get_context(method).Pool(num_workers)


def _map(pool, function, items, ordered: bool = True):
  if pool is None:
    return map(function, items)
  return pool.imap(function, items) if ordered else pool.imap_unordered(function, items)


def _validate_all(pool, images: gldv2_csv.ImageList, label: str, skipped) -> gldv2_csv.ImageList:
  """Drops images that do not decode; returns the list with sizes attached."""
  total = len(images.paths)
  chunks = [images.paths[i : i + _VALIDATE_CHUNK] for i in range(0, total, _VALIDATE_CHUNK)]
  progress = ProgressReporter(f"Checking {label} images", total, "images", every_items=5000)
  kept = gldv2_csv.ImageList([], [], [], [], images.relabeling)
  n = 0
  printed = 0
  for results in _map(pool, _validate_chunk, chunks):
    for height, width, problem in results:
      if problem is None:
        kept.paths.append(images.paths[n])
        kept.ids.append(images.ids[n])
        if images.labels:
          kept.labels.append(images.labels[n])
        kept.heights.append(height)
        kept.widths.append(width)
      else:
        skipped.append((images.ids[n], problem, images.paths[n]))
        if printed < _MAX_PRINTED_PROBLEMS:
          print(f"Skipping {images.paths[n]}: {problem}", flush=True)
          printed += 1
      n += 1
    progress.update(len(results))
  if total:
    progress.done()
  return kept


def _shard_tasks(
  prefix: str, images, order: Sequence[int], num_shards: int, output_dir: str, labelled: bool
) -> list[_ShardTask]:
  bounds = split.shard_boundaries(len(order), num_shards)
  tasks = []
  for k in range(num_shards):
    chosen = order[bounds[k] : bounds[k + 1]]
    tasks.append(
      _ShardTask(
        output_path=os.path.join(output_dir, f"{prefix}-{k:05d}-of-{num_shards:05d}"),
        paths=[images.paths[i] for i in chosen],
        ids=[images.ids[i] for i in chosen],
        labels=[images.labels[i] for i in chosen] if labelled else None,
        heights=[images.heights[i] for i in chosen],
        widths=[images.widths[i] for i in chosen],
      )
    )
  return tasks


def _write_skipped(output_dir: str, skipped: list[tuple[str, str, str]]) -> str:
  path = os.path.join(output_dir, SKIPPED_FILENAME)
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["id", "reason", "path"])
  writer.writerows(skipped)
  atomic_io.write_text_atomic(path, buffer.getvalue())
  return path


def _write_relabeling(output_dir: str, relabeling: list[tuple[int, int]]) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer)  # Standard writer (\r\n), as the reference.
  writer.writerow(["new_label", "old_label"])
  writer.writerows(relabeling)
  atomic_io.write_text_atomic(os.path.join(output_dir, RELABELING_FILENAME), buffer.getvalue())


def build_image_dataset(config: BuildConfig) -> BuildSummary:
  """Writes the TFRecord shards, ``relabeling.csv``, the skip list and the metadata.

  Raises:
    ValueError: bad settings (e.g. ``validation_split_size`` outside (0, 1) while
      splitting) or unreadable/malformed CSVs, with a one-line message.
  """
  if config.num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {config.num_shards}")
  if config.generate_train_validation_splits and not 0.0 < config.validation_split_size < 1.0:
    raise ValueError(
      "validation_split_size must be strictly between 0 and 1 when generating splits, "
      f"got {config.validation_split_size}"
    )
  if config.test_csv_path is not None and not config.test_directory:
    raise ValueError("--test_directory is required when --test_csv_path is given")
  start = time.monotonic()
  os.makedirs(config.output_directory, exist_ok=True)
  num_workers = config.num_workers or os.cpu_count() or 1

  if config.train_clean_csv_path:
    images = gldv2_csv.clean_csv_images(config.train_directory, config.train_clean_csv_path)
    _write_relabeling(config.output_directory, images.relabeling or [])
  else:
    images = gldv2_csv.full_csv_images(config.train_directory, config.train_csv_path)
  skipped = [(image_id, reason, "") for image_id, reason in images.missing]
  print(
    f"Found {len(images.paths)} train images to write"
    + (f" ({len(images.missing)} listed images have no file or no CSV row)" if skipped else ""),
    flush=True,
  )

  pool = _pool(num_workers) if num_workers > 1 else None
  try:
    images = _validate_all(pool, images, "train", skipped)
    test_images = None
    if config.test_csv_path is not None:
      test_images = _validate_all(
        pool, gldv2_csv.unlabelled_images(config.test_directory), "test", skipped
      )

    splits: list[tuple[str, list[int], bool]] = []
    classes_without_train = 0
    if config.generate_train_validation_splits:
      validation, train = split.train_validation_split(
        images.labels, config.validation_split_size, config.seed
      )
      splits += [("validation", validation, True), ("train", train, True)]
      classes_without_train = len(set(images.labels) - {images.labels[i] for i in train})
    else:
      splits.append(("train", list(range(len(images.paths))), True))
    tasks = []
    for prefix, order, labelled in splits:
      tasks += _shard_tasks(
        prefix, images, order, config.num_shards, config.output_directory, labelled
      )
    if test_images is not None:
      order = list(range(len(test_images.paths)))
      tasks += _shard_tasks(
        "test", test_images, order, config.num_shards, config.output_directory, False
      )

    total = sum(len(t.paths) for t in tasks)
    progress = ProgressReporter("Writing shards", total, "images", every_items=5000)
    written_counts: dict[str, int] = {}
    for (count, problems), task in zip(_map(pool, _write_shard, tasks), tasks):
      skipped += problems
      name = os.path.basename(task.output_path).split("-")[0]
      written_counts[name] = written_counts.get(name, 0) + count
      progress.update(count + len(problems))
    progress.done()
  finally:
    if pool is not None:
      pool.close()
      pool.join()

  num_examples = {name: 0 for name in ("train", "validation", "test")}
  shard_paths: dict[str, list[str]] = {}
  for task in tasks:
    name = os.path.basename(task.output_path).split("-")[0]
    shard_paths.setdefault(name, []).append(task.output_path)
  num_examples.update(written_counts)
  if images.relabeling is not None:
    num_classes = len(images.relabeling)
  else:
    num_classes = max(images.labels) + 1 if images.labels else 0
  skipped_path = _write_skipped(config.output_directory, skipped)
  if skipped:
    print(f"Skipped {len(skipped)} images (missing, unlisted or undecodable); see {skipped_path}")
  if config.generate_train_validation_splits:
    print(
      f"{classes_without_train} of {len(set(images.labels))} classes have no training image "
      "(a class with a single image goes to validation only)"
    )
  metadata_path = metadata.write_metadata(
    config.output_directory,
    {
      "num_classes": num_classes,
      "label_mode": "relabelled" if images.relabeling is not None else "raw_landmark_id",
      "num_examples": num_examples,
      "num_shards": config.num_shards,
      "num_skipped": len(skipped),
      "classes_without_train_images": classes_without_train,
      "flags": {k: v for k, v in dataclasses.asdict(config).items() if k != "num_workers"},
    },
  )
  elapsed = time.monotonic() - start
  written = sum(num_examples.values())
  print(
    f"Wrote {written} images ({num_examples}) to {config.output_directory} in {elapsed:.1f} s "
    f"({written / max(elapsed, 1e-9):.1f} images/s, {num_workers} workers)",
    flush=True,
  )
  return BuildSummary(
    num_examples=num_examples,
    num_classes=num_classes,
    skipped=skipped,
    classes_without_train_images=classes_without_train,
    shard_paths=shard_paths,
    metadata_path=metadata_path,
  )
