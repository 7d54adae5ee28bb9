"""DELG feature extraction for a Revisited Oxford/Paris style benchmark (inference.md §5.1).

For every image of the chosen list (``query`` or ``index``) of a ground-truth
file, reads ``<images_dir>/<name>.jpg``, runs the config-driven extractor and
writes ``<name>.delg_global`` (DatumProto, ``datum_io``) and/or
``<name>.delg_local`` (DelfFeatures, ``feature_io``).

Queries are cropped to their ground-truth box, as the reference does (and as
evaluations that report comparable ROxford/RParis numbers must; pain point 24):
the box ``[x1, y1, x2, y2]`` is rounded with Python's ``round`` (half to even,
KEEP, KB-43) and used as a PIL crop box (right/lower exclusive), and the
extractor receives ``resize_factor = max(crop W, H) / max(full W, H)`` so that
the crop is resized exactly as it would be inside the resized full image.
Keypoint locations are in the cropped image's frame.

Differences from the reference (KB-41): an image that cannot be read is
reported in one line and skipped, the run goes on, a summary is printed at the
end and the caller exits with a non-zero status; outputs are written
atomically. KB-39: an empty global descriptor (image under 10 px) is written as
the reference does, with a warning naming the image.

Beyond the reference: ``output_store`` writes a sharded feature store
(``delf.feature_store``) instead of per-image files (a rerun extracts only the ids
not yet stored); ``num_shards`` / ``shard_index`` split the list (image i goes to
shard ``i % num_shards``) for array jobs; ``list_images_path`` takes the images
from a list of paths (e.g. a GLDv2 split; ids = file names without extension, no
cropping) instead of a ground-truth file.

Issue 8: the output folder records the config and model (``extraction_config.json``,
as ``extract_features`` does), so skipping existing files never keeps another
config's features; a changed config is refused unless ``skip_existing`` is off (a
store refuses another config outright).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np
from PIL import Image

from delf import datum_io, feature_io, feature_store
from delf.progress import ProgressReporter
from delf.retrieval import revisited

GLOBAL_FEATURE_EXTENSION = ".delg_global"
LOCAL_FEATURE_EXTENSION = ".delg_local"
IMAGE_EXTENSION = ".jpg"
IMAGE_SETS = ("query", "index")
_STATUS_CHECK_ITERATIONS = 50

ExtractorFn = Callable[[np.ndarray, float], dict]


@dataclasses.dataclass(frozen=True)
class DelgExtractionConfig:
  """Settings of a DELG extraction run (defaults = the script's flags)."""

  delf_config_path: str = "/tmp/delf_config_example.pbtxt"
  dataset_file_path: str = "/tmp/gnd_roxford5k.mat"
  images_dir: str = "/tmp/images"
  image_set: str = "query"
  output_features_dir: str = "/tmp/features"
  # Beyond the reference (see the module docstring).
  output_store: str = ""
  store_dtype: str = "float32"
  store_images_per_file: int = feature_store.DEFAULT_IMAGES_PER_FILE
  num_shards: int = 1
  shard_index: int = 0
  list_images_path: str = ""
  skip_existing: bool = True


@dataclasses.dataclass
class ExtractionSummary:
  """Counts of one run, and the images that failed (name -> problem)."""

  num_images: int = 0
  num_extracted: int = 0
  num_skipped: int = 0
  failed: dict[str, str] = dataclasses.field(default_factory=dict)
  empty_global: list[str] = dataclasses.field(default_factory=list)


def CropQuery(image: Image.Image, bbx: Sequence[float]) -> tuple[Image.Image, float]:
  """Crops a query to its box and returns ``(crop, resize_factor)``.

  Args:
    image: the full query image.
    bbx: ``[x1, y1, x2, y2]`` in pixels (floats); each value is rounded with
      Python's ``int(round(.))`` (half to even, KB-43).

  Returns:
    The PIL crop (left, upper, right, lower; right/lower exclusive) and
    ``max(crop W, H) / max(full W, H)``.
  """
  original_size = max(image.size)
  # Python round() of a float: half to even, as int(round(b)) in the reference (KB-43).
  box = tuple(round(float(b)) for b in np.asarray(bbx).ravel())
  if len(box) != 4:
    raise ValueError(f"query box must be [x1, y1, x2, y2], got {list(bbx)}")
  cropped = image.crop(box)
  return cropped, max(cropped.size) / original_size


def _RequestedOutputs(delf_config: Any) -> tuple[bool, bool]:
  return bool(delf_config.use_global_features), bool(delf_config.use_local_features)


def extract_delg_features(
  config: DelgExtractionConfig,
  *,
  delf_config: Any = None,
  extractor_fn: ExtractorFn | None = None,
  image_loader: Callable[[str], Image.Image] | None = None,
  out: TextIO | None = None,
) -> ExtractionSummary:
  """Extracts DELG features for the query or index list of a ground-truth file.

  Args:
    config: paths and the image set.
    delf_config: a parsed ``DelfConfig``; None = read ``config.delf_config_path``
      with strict text-format parsing (a singular field given twice is an error).
    extractor_fn: ``fn(image uint8 [H, W, 3], resize_factor) -> dict`` with
      ``global_descriptor`` and/or ``local_features``; None = built from the config
      with ``delf.extraction.extractor.MakeExtractor`` (loads the model once).
    image_loader: path -> RGB PIL image (default ``RgbLoader``).
    out: where progress goes (stdout by default).

  Returns:
    An ``ExtractionSummary``; images that failed are listed there (the run goes on).

  Raises:
    ValueError: unknown image set, bad config, or unusable ground-truth file.
  """
  out = out or sys.stdout
  if config.image_set not in IMAGE_SETS:
    raise ValueError(f"image_set must be one of {IMAGE_SETS}, got {config.image_set!r}")
  if delf_config is None:
    from delf.extraction import config_io

    delf_config = config_io.read_delf_config(config.delf_config_path, strict=True)
  want_global, want_local = _RequestedOutputs(delf_config)
  if not (want_global or want_local):
    raise ValueError(
      f"{config.delf_config_path}: neither use_global_features nor use_local_features is set"
    )
  if image_loader is None:
    from delf.extraction.image_io import RgbLoader

    image_loader = RgbLoader

  if config.num_shards < 1 or not 0 <= config.shard_index < config.num_shards:
    raise ValueError(
      f"shard_index must be in [0, num_shards); got {config.shard_index} of {config.num_shards}"
    )
  if config.list_images_path:
    image_paths = _ReadImageList(config.list_images_path)
    image_list = [os.path.splitext(os.path.basename(p))[0] for p in image_paths]
    ground_truth, is_query = [], False
  else:
    query_list, index_list, ground_truth = revisited.ReadDatasetFile(config.dataset_file_path)
    is_query = config.image_set == "query"
    image_list = query_list if is_query else index_list
    image_paths = [os.path.join(config.images_dir, name + IMAGE_EXTENSION) for name in image_list]
  print(f"done! Found {len(image_list)} images", file=out)
  positions = [i for i in range(len(image_list)) if i % config.num_shards == config.shard_index]
  from delf.extraction import output_config

  record = output_config.record_for(delf_config)
  store = None
  stale_before = None
  if config.output_store:
    output_config.check_store(config.output_store, record)
    store = feature_store.StoreWriter(
      config.output_store,
      shard_index=config.shard_index,
      num_shards=config.num_shards,
      images_per_file=config.store_images_per_file,
      dtype=config.store_dtype,
      has_global=want_global,
      has_local=want_local,
    )
  else:
    if os.path.exists(config.output_features_dir) and not os.path.isdir(config.output_features_dir):
      raise ValueError(
        f"--output_features_dir={config.output_features_dir} is a file, not a directory"
      )
    os.makedirs(config.output_features_dir, exist_ok=True)
    stale_before = output_config.prepare(config.output_features_dir, record, config.skip_existing)
  try:
    summary = _ExtractImages(
      config, delf_config, extractor_fn, image_loader, image_list, image_paths, positions,
      ground_truth if is_query else None, store, stale_before, want_global, want_local, out,
    )  # fmt: skip
  except BaseException:
    if store is not None:
      store.flush()  # Keep every complete image: a rerun resumes after them.
    raise
  if store is not None:
    store.close()
  elif not summary.failed and config.num_shards == 1:
    output_config.finish(config.output_features_dir, record)
  return summary


def _done_already(path: str, skip_existing: bool, stale_before: float | None) -> bool:
  if not skip_existing or not os.path.exists(path):
    return False
  # After an interrupted --noskip_existing run, older files are the old config's.
  return stale_before is None or os.path.getmtime(path) >= stale_before


def _ReadImageList(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    paths = [line.strip() for line in f if line.strip()]
  names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  if len(set(names)) != len(names):
    repeated = sorted({n for n in names if names.count(n) > 1})
    raise ValueError(f"{path}: image ids (file names) repeated: {', '.join(repeated[:5])}")
  return paths


def _ExtractImages(
  config: DelgExtractionConfig,
  delf_config: Any,
  extractor_fn: ExtractorFn | None,
  image_loader: Callable[[str], Image.Image],
  image_list: Sequence[str],
  image_paths: Sequence[str],
  positions: Sequence[int],
  ground_truth: Sequence[dict] | None,
  store: feature_store.StoreWriter | None,
  stale_before: float | None,
  want_global: bool,
  want_local: bool,
  out: TextIO,
) -> ExtractionSummary:
  summary = ExtractionSummary(num_images=len(positions))
  progress = ProgressReporter(
    f"Extracting {'listed' if config.list_images_path else config.image_set} DELG features",
    total=len(positions),
    unit="images",
    every_items=_STATUS_CHECK_ITERATIONS,
    stream=out,
  )
  for i in positions:
    name = image_list[i]
    global_path = os.path.join(config.output_features_dir, name + GLOBAL_FEATURE_EXTENSION)
    local_path = os.path.join(config.output_features_dir, name + LOCAL_FEATURE_EXTENSION)
    if store is not None:
      done = name in store
    else:
      done = (
        not want_global or _done_already(global_path, config.skip_existing, stale_before)
      ) and (not want_local or _done_already(local_path, config.skip_existing, stale_before))
    if done:
      summary.num_skipped += 1
      progress.update()
      continue
    image_path = image_paths[i]
    try:
      image = image_loader(image_path)
    except Exception as e:  # Missing/corrupt images are reported, not fatal (KB-41).
      problem = f"cannot read image ({type(e).__name__}: {e})"
      print(f"ERROR: {image_path}: {problem}; skipped", file=out, flush=True)
      summary.failed[image_path] = problem
      progress.update()
      continue
    resize_factor = 1.0
    if ground_truth is not None and ground_truth[i].get("bbx") is not None:
      image, resize_factor = CropQuery(image, ground_truth[i]["bbx"])
    if extractor_fn is None:
      from delf.extraction import extractor

      extractor_fn = extractor.MakeExtractor(delf_config)
    extracted = extractor_fn(np.array(image), resize_factor)
    if store is not None:
      local = extracted["local_features"] if want_local else None
      store.add(
        name,
        np.asarray(extracted["global_descriptor"]) if want_global else None,
        None
        if local is None
        else (local["locations"], local["scales"], local["descriptors"], local["attention"]),
      )
    if want_global:
      descriptor = np.asarray(extracted["global_descriptor"])
      if descriptor.size == 0:
        print(
          f"WARNING: {image_path}: empty global descriptor (image too small); "
          "perform_retrieval stops on it unless --allow_missing_features (KB-39)",
          file=out,
        )
        summary.empty_global.append(image_path)
      if store is None:
        datum_io.WriteToFile(descriptor, global_path)
    if want_local and store is None:
      local = extracted["local_features"]
      feature_io.WriteToFile(
        local_path,
        local["locations"],
        local["scales"],
        local["descriptors"],
        local["attention"],
      )
    summary.num_extracted += 1
    progress.update()
  progress.done()
  print(
    f"Extracted {summary.num_extracted}, skipped {summary.num_skipped} (already done), "
    f"failed {len(summary.failed)} of {summary.num_images} "
    f"{'listed' if config.list_images_path else config.image_set} images",
    file=out,
  )
  return summary
