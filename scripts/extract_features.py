r"""Extracts DELF local features for a list of images into .delf files.

Usage:
  python scripts/extract_features.py \
    --config_path=configs/delf_config_example.pbtxt \
    --list_images_path=list_images.txt \
    --output_dir=data/oxford5k_features

Reads one image path per line from --list_images_path and writes
<output_dir>/<image basename without extension>.delf for each (existing files are
skipped with `Skipping <path>`). The model, scales, feature count and attention
threshold come from the text-format DelfConfig at --config_path. Its
`score_threshold` is on the model's raw (softplus) attention scale, not a
probability: the released models use 100-455, and a model trained briefly may need
a much lower value; an image without any feature above it is reported.
Unreadable images are reported and skipped; the exit status is non-zero if any
image failed. For global descriptors use scripts/extract_delg_features.py.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags, feature_store
from delf.extraction import extract_features

_CONFIG_PATH = flags.DEFINE_string(
  "config_path",
  "delf_config_example.pbtxt",
  "Path to the text-format DelfConfig (model, image scales, max features, attention "
  "score_threshold on the model's raw attention scale).",
)
_LIST_IMAGES_PATH = flags.DEFINE_string(
  "list_images_path", "list_images.txt", "Text file with one image path per line."
)
_OUTPUT_DIR = flags.DEFINE_string(
  "output_dir", "test_features", "Directory for the .delf files; created if missing."
)
_NUM_SHARDS = flags.DEFINE_integer(
  "num_shards",
  1,
  "Split the image list into this many shards (image i goes to shard i % num_shards), "
  "e.g. to run several processes.",
  lower_bound=1,
)
_SHARD_INDEX = flags.DEFINE_integer(
  "shard_index", 0, "Which shard this process extracts, in [0, num_shards).", lower_bound=0
)
_SKIP_EXISTING = flags.DEFINE_boolean(
  "skip_existing",
  True,
  "Skip images whose .delf file already exists (printing `Skipping <path>`); "
  "--noskip_existing recomputes them.",
)
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size",
  1,
  "Run up to this many consecutive images of the same resized size per model call "
  "(e.g. with a fixed max_image_size); needs an export made with --batch_signature. "
  "Outputs are those of one image at a time.",
  lower_bound=1,
)


_OUTPUT_STORE = flags.DEFINE_string(
  "output_store",
  "",
  "If set, write the features into a sharded HDF5 feature store in this directory "
  "(ids = image basenames; ids already stored are skipped) instead of .delf files.",
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  config = extract_features.ExtractFeaturesConfig(
    config_path=_CONFIG_PATH.value,
    list_images_path=_LIST_IMAGES_PATH.value,
    output_dir=_OUTPUT_DIR.value,
    num_shards=_NUM_SHARDS.value,
    shard_index=_SHARD_INDEX.value,
    skip_existing=_SKIP_EXISTING.value,
    output_store=_OUTPUT_STORE.value,
    store_dtype=_STORE_DTYPE.value,
    store_images_per_file=_STORE_IMAGES_PER_FILE.value,
    batch_size=_BATCH_SIZE.value,
  )
  return extract_features.extract_features(config)


if __name__ == "__main__":
  cli_flags.run(main)
