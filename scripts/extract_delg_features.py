"""Extracts DELG global and local features for a Revisited Oxford/Paris style benchmark.

Usage:
  python -m scripts.extract_delg_features \
    --delf_config_path=configs/r50delg_gld_config.pbtxt \
    --dataset_file_path=gnd_roxford5k.mat --images_dir=oxford5k_images \
    --image_set=query --output_features_dir=features/query
  (then again with --image_set=index --output_features_dir=features/index)

For each image <name> of the chosen list, reads <images_dir>/<name>.jpg and writes
<output_features_dir>/<name>.delg_global and/or <name>.delg_local (according to
use_global_features / use_local_features in the config). Query images are cropped
to their ground-truth box first, as the reference does. Images whose outputs all
exist are skipped. Unreadable images are reported and skipped; the exit status is
non-zero if any failed.

At scale (beyond the reference): --output_store=DIR writes a sharded HDF5 feature
store instead of per-image files (resumable: a rerun extracts only missing ids);
--num_shards/--shard_index split the list for array jobs (disjoint shard files, no
merge step); --list_images_path takes images from a list of paths (e.g. every JPEG of
a GLDv2 split; ids = file names) instead of --dataset_file_path.
"""

from __future__ import annotations

from absl import flags

from delf import cli_flags, feature_store
from delf.retrieval import delg_extraction

_DELF_CONFIG_PATH = flags.DEFINE_string(
  "delf_config_path",
  "/tmp/delf_config_example.pbtxt",
  "Path to DelfConfig proto text file with configuration to be used for DELG extraction.",
)
_DATASET_FILE_PATH = flags.DEFINE_string(
  "dataset_file_path",
  "/tmp/gnd_roxford5k.mat",
  "Dataset file for Revisited Oxford or Paris (gnd_*.mat; .json and .pkl also accepted).",
)
_IMAGES_DIR = flags.DEFINE_string(
  "images_dir", "/tmp/images", "Directory where dataset images (<name>.jpg) are located."
)
_IMAGE_SET = flags.DEFINE_enum(
  "image_set",
  "query",
  ["query", "index"],
  "Whether to extract features from query or index images.",
)
_OUTPUT_FEATURES_DIR = flags.DEFINE_string(
  "output_features_dir",
  "/tmp/features",
  "Directory where DELG features will be written to (created if missing).",
)


_OUTPUT_STORE = flags.DEFINE_string(
  "output_store",
  "",
  "If set, write a sharded HDF5 feature store in this directory instead of per-image "
  "files in --output_features_dir (ids already stored are skipped).",
)
_STORE_DTYPE = flags.DEFINE_enum(
  "store_dtype",
  "float32",
  list(feature_store.DTYPES),
  "Descriptor precision in the store: float32 (exact) or float16 (half the disk).",
)
_STORE_IMAGES_PER_FILE = flags.DEFINE_integer(
  "store_images_per_file",
  feature_store.DEFAULT_IMAGES_PER_FILE,
  "Images per store part file (at most this many are redone after a crash).",
  lower_bound=1,
)
_NUM_SHARDS = flags.DEFINE_integer(
  "num_shards",
  1,
  "Split the image list into this many shards (image i -> i % num_shards).",
  lower_bound=1,
)
_SHARD_INDEX = flags.DEFINE_integer(
  "shard_index", 0, "Which shard this process extracts, in [0, num_shards).", lower_bound=0
)
_LIST_IMAGES_PATH = flags.DEFINE_string(
  "list_images_path",
  "",
  "Optional text file of image paths, one per line, used instead of --dataset_file_path "
  "(ids = file names without extension; no query cropping).",
)
_SKIP_EXISTING = flags.DEFINE_boolean(
  "skip_existing",
  True,
  "Skip images whose feature files exist and were made with the same config and model "
  "(recorded in extraction_config.json); --noskip_existing extracts them again.",
)


def main(argv):
  if len(argv) > 1:
    raise RuntimeError("Too many command-line arguments.")
  config = delg_extraction.DelgExtractionConfig(
    delf_config_path=_DELF_CONFIG_PATH.value,
    dataset_file_path=_DATASET_FILE_PATH.value,
    images_dir=_IMAGES_DIR.value,
    image_set=_IMAGE_SET.value,
    output_features_dir=_OUTPUT_FEATURES_DIR.value,
    output_store=_OUTPUT_STORE.value,
    store_dtype=_STORE_DTYPE.value,
    store_images_per_file=_STORE_IMAGES_PER_FILE.value,
    num_shards=_NUM_SHARDS.value,
    shard_index=_SHARD_INDEX.value,
    list_images_path=_LIST_IMAGES_PATH.value,
    skip_existing=_SKIP_EXISTING.value,
  )
  try:
    summary = delg_extraction.extract_delg_features(config)
  except (OSError, ValueError) as e:
    raise SystemExit(f"extract_delg_features: {e}") from None
  if summary.failed:
    raise SystemExit(f"extract_delg_features: {len(summary.failed)} image(s) failed (see above)")


if __name__ == "__main__":
  cli_flags.run(main, tensorflow=True)
