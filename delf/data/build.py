"""The dataset build: GLDv2 images + CSVs -> sharded TFRecords (training.md §3).

Same output as the reference for valid, complete input (same examples, shards,
order and ``relabeling.csv``), with these differences:

* KB-3/KB-4: ids without files (both CSV modes), files without CSV rows and
  files that TensorFlow's ``decode_jpeg`` cannot turn into one 3-channel image
  are skipped, listed in ``skipped_images.csv`` and counted in one summary line,
  instead of aborting the build. Acceptance is decided by the training
  pipeline's own decoder (``delf.data.image_check``), so whatever the build keeps
  decodes at training time; as in the reference, grayscale/CMYK JPEGs and PNG
  data named ``.jpg`` are kept (original bytes).
* KB-6: the images are checked in TensorFlow's thread pool, then the shards are
  written by worker processes, one shard per task, each atomically. Workers hold
  one image at a time, so memory does not grow with the dataset. Shard contents do
  not depend on the number of workers.
* KB-7: also prints how many classes got no training image.
* ``dataset_metadata.json`` records the class count, split sizes, flags and the
  manifest of the shards (name, split, examples, bytes).
* A build never leaves a mix: everything is written into a hidden staging folder
  inside ``output_directory`` and moved into place only once complete (the
  manifest last), and the previous build's shards, CSVs and metadata are then
  removed. A failed, interrupted or empty build leaves the previous build as it
  was. Zero usable images is an error. One build at a time per output folder.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence

from delf import atomic_io, run_lock
from delf.data import gldv2_csv, image_check, metadata, split, tfrecord
from delf.progress import ProgressReporter

SKIPPED_FILENAME = "skipped_images.csv"
RELABELING_FILENAME = "relabeling.csv"
LOCK_FILENAME = ".build_image_dataset.lock"
STAGING_PREFIX = ".build_image_dataset.staging-"
_MAX_PRINTED_PROBLEMS = 20


class BuildError(ValueError):
  """A one-line reason why the build wrote nothing."""


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


def validate_image(path: str) -> tuple[int, int, str | None]:
  """Decodes ``path`` as the training pipeline will; returns ``(height, width, problem or None)``."""
  return image_check.check_image(path)


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


def _validate_all(images: gldv2_csv.ImageList, label: str, skipped) -> gldv2_csv.ImageList:
  """Drops images the training pipeline could not decode; returns the list with sizes attached."""
  total = len(images.paths)
  progress = ProgressReporter(f"Checking {label} images", total, "images", every_items=5000)
  results = image_check.check_images(images.paths, progress=progress.update)
  kept = gldv2_csv.ImageList([], [], [], [], images.relabeling)
  printed = 0
  for n, (height, width, problem) in enumerate(results):
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


def _check_config(config: BuildConfig) -> None:
  if config.num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {config.num_shards}")
  if config.generate_train_validation_splits and not 0.0 < config.validation_split_size < 1.0:
    raise ValueError(
      "validation_split_size must be strictly between 0 and 1 when generating splits, "
      f"got {config.validation_split_size}"
    )
  if config.test_csv_path is not None and not config.test_directory:
    raise ValueError("--test_directory is required when --test_csv_path is given")
  if os.path.exists(config.output_directory) and not os.path.isdir(config.output_directory):
    raise ValueError(
      f"--output_directory={config.output_directory} is a file, not a directory; "
      "name a new or existing directory"
    )


def _no_images_message(config: BuildConfig, images: gldv2_csv.ImageList, directory: str) -> str:
  pattern = os.path.join(directory, "*.jpg")
  listed = f"the CSV lists {images.listed} images" if images.listed else "no CSV is read"
  if images.found == 0:
    hint = "check --train_directory (a glob such as gldv2_dataset/train/*/*/*/ for GLDv2)"
    others = [
      p for ext in ("*.JPG", "*.jpeg", "*.JPEG") for p in glob.glob(os.path.join(directory, ext))
    ]
    if others:
      hint = f"only *.jpg files are read (found e.g. {others[0]})"
    return f"no image matches {pattern!r} ({listed}): {hint}"
  return (
    f"none of the {images.found} images matching {pattern!r} is listed in the CSV ({listed}); "
    "check --train_csv_path / --train_clean_csv_path"
  )


def _previous_build(output_dir: str) -> set[str]:
  """Names of the files of the build currently in ``output_dir``."""
  names = {
    name
    for name in os.listdir(output_dir)
    if metadata.SHARD_NAME.match(name)
    or name in (RELABELING_FILENAME, SKIPPED_FILENAME, metadata.METADATA_FILENAME)
  }
  try:
    previous = metadata.read_metadata(os.path.join(output_dir, metadata.METADATA_FILENAME))
  except ValueError:
    previous = None
  names |= set((previous or {}).get("files") or {})
  return names


def _commit(staging: str, output_dir: str) -> int:
  """Moves the staged build into ``output_dir`` (metadata last); removes the previous build.

  Returns the number of files of the previous build that were removed.
  """
  old = _previous_build(output_dir)
  new = set(os.listdir(staging))
  for name in sorted(new - {metadata.METADATA_FILENAME}):
    os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
  removed = 0
  for name in sorted(old - new):
    if name != metadata.METADATA_FILENAME:
      try:
        os.remove(os.path.join(output_dir, name))
        removed += 1
      except FileNotFoundError:
        pass
  if metadata.METADATA_FILENAME in new:
    os.replace(
      os.path.join(staging, metadata.METADATA_FILENAME),
      os.path.join(output_dir, metadata.METADATA_FILENAME),
    )
  else:  # pragma: no cover - every build writes metadata
    old_metadata = os.path.join(output_dir, metadata.METADATA_FILENAME)
    if os.path.exists(old_metadata):
      os.remove(old_metadata)
  return removed


def _remove_stale_staging(output_dir: str) -> None:
  """Staging folders of builds that were killed (we hold the lock, so none is live)."""
  for name in os.listdir(output_dir):
    if name.startswith(STAGING_PREFIX):
      shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


def build_image_dataset(config: BuildConfig) -> BuildSummary:
  """Writes the TFRecord shards, ``relabeling.csv``, the skip list and the metadata.

  Nothing in ``output_directory`` changes unless the build completes; then the
  new build replaces the previous one as a whole.

  Raises:
    ValueError: bad settings (e.g. ``validation_split_size`` outside (0, 1) while
      splitting), unreadable/malformed CSVs, no usable image, or another build
      running into the same folder; one line each.
  """
  _check_config(config)
  os.makedirs(config.output_directory, exist_ok=True)
  lock_path = os.path.join(config.output_directory, LOCK_FILENAME)
  try:
    lock = run_lock.acquire(lock_path, f"--output_directory={config.output_directory}")
  except run_lock.LockedError as e:
    raise BuildError(str(e)) from None
  with lock:
    _remove_stale_staging(config.output_directory)
    staging = os.path.join(config.output_directory, STAGING_PREFIX + uuid.uuid4().hex[:12])
    os.mkdir(staging)
    try:
      summary = _build(config, staging)
      removed = _commit(staging, config.output_directory)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  if removed:
    print(f"Replaced the previous build in {config.output_directory} ({removed} old files removed)")
  summary.shard_paths = {
    name: [os.path.join(config.output_directory, os.path.basename(p)) for p in paths]
    for name, paths in summary.shard_paths.items()
  }
  summary.metadata_path = os.path.join(config.output_directory, metadata.METADATA_FILENAME)
  return summary


def _build(config: BuildConfig, staging: str) -> BuildSummary:
  """The whole build, written into ``staging``."""
  start = time.monotonic()
  num_workers = config.num_workers or os.cpu_count() or 1

  if config.train_clean_csv_path:
    images = gldv2_csv.clean_csv_images(config.train_directory, config.train_clean_csv_path)
    _write_relabeling(staging, images.relabeling or [])
    if images.empty_rows:
      print(
        f"Warning: {len(images.empty_rows)} row(s) of the clean CSV list no image and are "
        f"ignored, as in the reference (first: {images.empty_rows[0]})",
        flush=True,
      )
  else:
    images = gldv2_csv.full_csv_images(config.train_directory, config.train_csv_path)
  skipped = [(image_id, reason, "") for image_id, reason in images.missing]
  if not images.paths:
    raise BuildError(
      f"nothing written: {_no_images_message(config, images, config.train_directory)}; "
      f"{config.output_directory} is unchanged"
    )
  print(
    f"Found {len(images.paths)} train images to write"
    + (f" ({len(images.missing)} listed images have no file or no CSV row)" if skipped else ""),
    flush=True,
  )

  images = _validate_all(images, "train", skipped)
  if not images.paths:
    raise BuildError(
      f"nothing written: none of the {len(skipped)} train images found can be decoded as "
      f"an image (e.g. {skipped[-1][2] or skipped[-1][0]}: {skipped[-1][1]}); "
      f"{config.output_directory} is unchanged"
    )
  test_images = None
  if config.test_csv_path is not None:
    test_images = _validate_all(gldv2_csv.unlabelled_images(config.test_directory), "test", skipped)

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
    tasks += _shard_tasks(prefix, images, order, config.num_shards, staging, labelled)
  if test_images is not None:
    order = list(range(len(test_images.paths)))
    tasks += _shard_tasks("test", test_images, order, config.num_shards, staging, False)

  total = sum(len(t.paths) for t in tasks)
  progress = ProgressReporter("Writing shards", total, "images", every_items=5000)
  written_counts: dict[str, int] = {}
  manifest: dict[str, dict] = {}
  pool = _pool(num_workers) if num_workers > 1 else None
  try:
    for (count, problems), task in zip(_map(pool, _write_shard, tasks), tasks):
      skipped += problems
      name = os.path.basename(task.output_path)
      prefix = name.split("-")[0]
      written_counts[prefix] = written_counts.get(prefix, 0) + count
      manifest[name] = {
        "split": prefix,
        "examples": count,
        "bytes": os.path.getsize(task.output_path),
      }
      progress.update(count + len(problems))
  finally:
    if pool is not None:
      pool.close()
      pool.join()
  progress.done()

  num_examples = {name: 0 for name in ("train", "validation", "test")}
  shard_paths: dict[str, list[str]] = {}
  for task in tasks:
    name = os.path.basename(task.output_path).split("-")[0]
    shard_paths.setdefault(name, []).append(task.output_path)
  num_examples.update(written_counts)
  if sum(num_examples.values()) == 0:
    raise BuildError(
      f"nothing written: every image vanished while the shards were written; "
      f"{config.output_directory} is unchanged"
    )
  if images.relabeling is not None:
    num_classes = len(images.relabeling)
  else:
    num_classes = max(images.labels) + 1 if images.labels else 0
  _write_skipped(staging, skipped)
  skipped_path = os.path.join(config.output_directory, SKIPPED_FILENAME)
  if skipped:
    print(f"Skipped {len(skipped)} images (missing, unlisted or undecodable); see {skipped_path}")
  if config.generate_train_validation_splits:
    print(
      f"{classes_without_train} of {len(set(images.labels))} classes have no training image "
      "(a class with a single image goes to validation only)"
    )
  metadata_path = metadata.write_metadata(
    staging,
    {
      "num_classes": num_classes,
      "label_mode": "relabelled" if images.relabeling is not None else "raw_landmark_id",
      "num_examples": num_examples,
      "num_shards": config.num_shards,
      "num_skipped": len(skipped),
      "classes_without_train_images": classes_without_train,
      "flags": {k: v for k, v in dataclasses.asdict(config).items() if k != "num_workers"},
      "files": manifest,
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
