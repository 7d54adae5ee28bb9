"""Extracting DELF local features for a list of images (``extract_features.py``, inference.md §4.1).

Output: ``<output_dir>/<image basename without extension>.delf`` (orientations
omitted, i.e. zeros), written atomically. Existing outputs are skipped with
``Skipping <path>``.

Differences from the reference (all keep its outputs for valid input):

* KB-40: a config without local features stops at once with one line naming the
  config and pointing to the DELG script (the reference crashed on the first image).
* KB-41: an image that cannot be read is reported in one line and counted; the
  run goes on, prints a summary and returns a non-zero status at the end.
* KB-58: an image with zero local features gets a warning explaining that
  ``score_threshold`` is on the model's raw attention scale, with the image's highest
  attention score (for the first few such images) to calibrate it.
* Throughput: the model is loaded once, and a background thread decodes and
  resizes the next images while the model runs on the current one.
* ``num_shards`` / ``shard_index`` split the list deterministically (image i goes
  to shard ``i % num_shards``) so several processes can share a list.
* ``output_store``: the features go to a sharded HDF5 feature store
  (``delf.feature_store``, ids = basenames) instead of ``.delf`` files; ids already
  stored are skipped, each shard process writes its own files.
* Skip-existing never keeps another config's outputs: the output folder records the
  config and model (``extraction_config.json``, see ``output_config``); a different
  one is refused unless ``--noskip_existing`` re-extracts. ``max_feature_num <= 0`` is
  refused. A truncated image is still extracted (KB-46) but reported.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import sys
from collections.abc import Iterator

import numpy as np

from delf import feature_io, feature_store
from delf.extraction import batching, config_io, output_config
from delf.extraction.image_io import RgbLoader, truncation
from delf.progress import ProgressReporter

DELG_SCRIPT = "scripts/extract_delg_features.py"
_PREFETCH = 2  # Images decoded ahead of the model.
# Images without features for which the highest attention score is looked up (one more
# model run each) to help calibrate score_threshold (KB-58).
_MAX_ATTENTION_PROBES = 3


@dataclasses.dataclass(frozen=True)
class ExtractFeaturesConfig:
  """Settings of ``extract_features.py`` (first three: the reference's flags and defaults)."""

  config_path: str = "delf_config_example.pbtxt"
  list_images_path: str = "list_images.txt"
  output_dir: str = "test_features"
  num_shards: int = 1
  shard_index: int = 0
  skip_existing: bool = True
  output_store: str = ""
  store_dtype: str = "float32"
  store_images_per_file: int = feature_store.DEFAULT_IMAGES_PER_FILE
  batch_size: int = 1


def _error(message: str) -> None:
  print(f"Error: {message}", file=sys.stderr, flush=True)


def read_image_list(path: str) -> list[str]:
  """One path per line, trailing whitespace stripped; blank lines ignored."""
  with open(path, encoding="utf-8") as f:
    return [line.rstrip() for line in f if line.strip()]


def output_path_for(image_path: str, output_dir: str) -> str:
  base = os.path.splitext(os.path.basename(image_path))[0]
  return os.path.join(output_dir, base + ".delf")


def shard(items: list[str], num_shards: int, shard_index: int) -> list[str]:
  """Items i with ``i % num_shards == shard_index`` (order kept)."""
  return [item for i, item in enumerate(items) if i % num_shards == shard_index]


def duplicate_outputs(image_paths: list[str], output_dir: str) -> dict[int, str]:
  """Positions of images whose output file an earlier image of the list already takes.

  Outputs are named by basename only, so ``a/x.jpg`` and ``b/x.jpg`` would write the
  same ``x.delf``; the later one maps to the earlier path it collides with.
  """
  first_by_output: dict[str, str] = {}
  duplicates = {}
  for i, path in enumerate(image_paths):
    output = output_path_for(path, output_dir)
    if output in first_by_output:
      duplicates[i] = first_by_output[output]
    else:
      first_by_output[output] = path
  return duplicates


def _store_id(image_path: str) -> str:
  return os.path.splitext(os.path.basename(image_path))[0]


def _load_and_prepare(extractor, path: str):
  problem = truncation(path)
  if problem:  # Still extracted, as the reference does (KB-46), but said.
    print(f"Warning: {path}: {problem}", file=sys.stderr, flush=True)
  image = np.array(RgbLoader(path))
  return extractor.prepare(image)


def _prefetched(extractor, paths: list[str]) -> Iterator[tuple[str, concurrent.futures.Future]]:
  """Yields (path, future of (resized image, scale factors)) with decoding running ahead."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    pending = []
    iterator = iter(paths)
    for path in iterator:
      pending.append((path, pool.submit(_load_and_prepare, extractor, path)))
      if len(pending) > _PREFETCH:
        yield pending.pop(0)
    yield from pending


def extract_features(config: ExtractFeaturesConfig) -> int:
  """Runs extraction for every listed image; returns the process exit status (0 = all ok)."""
  if config.num_shards < 1 or not 0 <= config.shard_index < config.num_shards:
    _error(
      f"--shard_index must be in [0, --num_shards); got {config.shard_index} of {config.num_shards}"
    )
    return 1
  try:
    delf_config = config_io.read_delf_config(config.config_path)
  except (OSError, ValueError) as e:
    _error(str(e))
    return 1
  if not delf_config.use_local_features:
    _error(
      f"{config.config_path} sets use_local_features: false, but extract_features writes "
      f"local features (.delf) only; for global descriptors use {DELG_SCRIPT}"
    )
    return 1
  max_feature_num = delf_config.delf_local_config.max_feature_num
  if max_feature_num <= 0:
    _error(
      f"{config.config_path}: delf_local_config.max_feature_num must be > 0, got "
      f"{max_feature_num} (every .delf file would be empty)"
    )
    return 1
  if os.path.exists(config.output_dir) and not os.path.isdir(config.output_dir):
    _error(f"--output_dir={config.output_dir} is a file, not a directory")
    return 1
  try:
    image_paths = read_image_list(config.list_images_path)
  except OSError as e:
    _error(f"cannot read the image list {config.list_images_path}: {e.strerror or e}")
    return 1
  # Decided on the whole list, so that every shard process agrees.
  duplicates = duplicate_outputs(image_paths, config.output_dir)
  colliding: list[str] = []
  for i, first in duplicates.items():
    if i % config.num_shards == config.shard_index:
      _error(
        f"{image_paths[i]} would overwrite the output of {first} (same basename "
        f"{os.path.basename(output_path_for(first, config.output_dir))}); skipped"
      )
      colliding.append(image_paths[i])
  image_paths = [
    path
    for i, path in enumerate(image_paths)
    if i % config.num_shards == config.shard_index and i not in duplicates
  ]
  record = output_config.record_for(delf_config)
  store = None
  stale_before = None
  try:
    if config.output_store:
      output_config.check_store(config.output_store, record)
      store = feature_store.StoreWriter(
        config.output_store,
        shard_index=config.shard_index,
        num_shards=config.num_shards,
        images_per_file=config.store_images_per_file,
        dtype=config.store_dtype,
        has_global=False,
      )
    else:
      os.makedirs(config.output_dir, exist_ok=True)
      stale_before = output_config.prepare(config.output_dir, record, config.skip_existing)
  except (OSError, ValueError) as e:  # ConfigChangedError: another config's files
    _error(str(e))
    return 1

  def done_already(path: str) -> bool:
    if store is not None:
      return _store_id(path) in store
    output = output_path_for(path, config.output_dir)
    if not config.skip_existing or not os.path.exists(output):
      return False
    # After an interrupted --noskip_existing run, older files are the old config's.
    return stale_before is None or os.path.getmtime(output) >= stale_before

  todo = []
  for path in image_paths:
    if done_already(path):
      print(f"Skipping {path}")
    else:
      todo.append(path)
  num_skipped = len(image_paths) - len(todo)
  print(f"Extracting features for {len(todo)} images ({num_skipped} already done)", flush=True)
  if not todo:
    if store is not None:
      store.close()
    elif not colliding and config.num_shards == 1:
      output_config.finish(config.output_dir, record)
    return 1 if colliding else 0

  from delf import tf_startup

  tf_startup.import_tensorflow()  # quietly, unless --verbosity asks otherwise
  from delf.extraction import extractor as extractor_lib  # Imports TensorFlow.

  try:
    extractor = extractor_lib.MakeExtractor(delf_config)
  except (OSError, ValueError) as e:
    _error(f"{config.config_path}: {e}")
    return 1

  if config.batch_size > 1 and not extractor.supports_batches:
    _error(
      f"--batch_size={config.batch_size} needs an export with the batch signature: "
      f"re-export {delf_config.model_path} with --batch_signature (or use --batch_size=1)"
    )
    return 1

  threshold = delf_config.delf_local_config.score_threshold
  progress = ProgressReporter("extract_features", total=len(todo), unit="images")
  failed: list[str] = []
  num_empty = 0
  prefetched = _prefetched(extractor, todo)
  for path, future, batch_features in batching.batched(extractor, prefetched, config.batch_size):
    try:
      resized, scale_factors = future.result()
    except Exception as e:  # PIL/OS errors: report the image and go on (KB-41).
      _error(f"cannot read image {path}: {e}")
      failed.append(path)
      progress.update()
      continue
    try:
      features = batch_features or extractor.extract_resized(
        resized, scale_factors, image_name=path
      )
      local = features["local_features"]
      num_features = len(local["attention"])
      arrays = (local["locations"], local["scales"], local["descriptors"], local["attention"])
      if store is not None:
        store.add(_store_id(path), local=arrays)
      else:
        feature_io.WriteToFile(output_path_for(path, config.output_dir), *arrays)
    except Exception as e:  # One bad image must not end a long run (KB-41).
      _error(f"cannot extract features for {path}: {type(e).__name__}: {e}")
      failed.append(path)
      progress.update()
      continue
    if num_features == 0 and min(resized.shape[:2]) >= 10:
      num_empty += 1
      highest = ""
      if num_empty <= _MAX_ATTENTION_PROBES:
        try:
          top = extractor.max_attention(resized)
          highest = f" (highest attention score in this image: {top:.4g})" if top else ""
        except Exception:  # Diagnostics only; never fail the run for them.
          highest = ""
      print(
        f"Warning: no local features for {path}: no attention score reached "
        f"score_threshold {threshold:g} in {config.config_path}{highest}. The threshold is "
        "on the model's raw attention scale (not a probability); lower it for this model "
        "(scripts/calibrate_attention.py prints the model's score distribution), then "
        "rerun with --noskip_existing to replace the files written with this threshold.",
        file=sys.stderr,
      )
    progress.update()
  progress.done()
  if store is not None:
    store.close()
  summary = f"Done: {len(todo) - len(failed)} images written, {num_skipped} skipped"
  failed = colliding + failed
  if num_empty:
    summary += f", {num_empty} without local features"
  if failed:
    summary += f", {len(failed)} failed: {', '.join(failed[:10])}"
    summary += " ..." if len(failed) > 10 else ""
  print(summary, flush=True)
  if store is None and not failed and config.num_shards == 1:
    output_config.finish(config.output_dir, record)
  return 1 if failed else 0
