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
"""

from __future__ import annotations

from absl import flags

from delf import cli_flags
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
