r"""Converts GLDv2 images and CSVs into sharded TFRecords for training.

Usage (train + validation split, as in the reference README):
  python -m scripts.build_image_dataset \
    --train_csv_path=gldv2_dataset/train/train.csv \
    --train_clean_csv_path=gldv2_dataset/train/train_clean.csv \
    --train_directory=gldv2_dataset/train/*/*/*/ \
    --output_directory=gldv2_dataset/tfrecord/ \
    --num_shards=128 --generate_train_validation_splits --validation_split_size=0.2
Test shards additionally: --test_csv_path=gldv2_dataset/train/test.csv
  --test_directory=gldv2_dataset/test/*/*/*/

Writes <output_directory>/{train,validation,test}-NNNNN-of-NNNNN, relabeling.csv (clean
mode), skipped_images.csv (ids left out: no file, no CSV row or not a decodable JPEG) and
dataset_metadata.json. Shards are written in parallel (--num_workers) with the same content
as a sequential build.
"""

from __future__ import annotations

import sys

from absl import app, flags

from delf import cli_flags
from delf.data import build

_TRAIN_DIRECTORY = flags.DEFINE_string(
  "train_directory",
  "/tmp/",
  "Directory containing the train *.jpg images; may be a glob, e.g. gldv2_dataset/train/*/*/*/.",
)
_TEST_DIRECTORY = flags.DEFINE_string(
  "test_directory",
  None,
  "Directory (or glob) containing the test *.jpg images; needed only with --test_csv_path.",
)
_OUTPUT_DIRECTORY = flags.DEFINE_string(
  "output_directory", "/tmp/", "Where the shards and relabeling.csv are written."
)
_TRAIN_CSV_PATH = flags.DEFINE_string(
  "train_csv_path", "/tmp/train.csv", "Full train CSV (id,url,landmark_id)."
)
_TRAIN_CLEAN_CSV_PATH = flags.DEFINE_string(
  "train_clean_csv_path",
  None,
  "Optional clean train CSV (landmark_id,images). If given, the full train CSV is ignored, "
  "only the listed images are written, labels are remapped to 0..N-1 and relabeling.csv is "
  "written.",
)
_TEST_CSV_PATH = flags.DEFINE_string(
  "test_csv_path", None, "If set, test shards are written (the CSV's content is not read)."
)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 128, "Number of shards per split.")
_GENERATE_SPLITS = flags.DEFINE_boolean(
  "generate_train_validation_splits",
  False,
  "Split the train images into TRAIN and VALIDATION (stratified per class).",
)
_VALIDATION_SPLIT_SIZE = flags.DEFINE_float(
  "validation_split_size",
  0.2,
  "Fraction of each class used for validation; strictly between 0 and 1 when splitting.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the train/validation split.")
_NUM_WORKERS = flags.DEFINE_integer(
  "num_workers",
  None,
  "Worker processes decoding images and writing shards (default: all cores). The output "
  "does not depend on it.",
  lower_bound=1,
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = build.BuildConfig(
    train_directory=_TRAIN_DIRECTORY.value,
    output_directory=_OUTPUT_DIRECTORY.value,
    train_csv_path=_TRAIN_CSV_PATH.value,
    train_clean_csv_path=_TRAIN_CLEAN_CSV_PATH.value,
    test_csv_path=_TEST_CSV_PATH.value,
    test_directory=_TEST_DIRECTORY.value,
    num_shards=_NUM_SHARDS.value,
    generate_train_validation_splits=_GENERATE_SPLITS.value,
    validation_split_size=_VALIDATION_SPLIT_SIZE.value,
    seed=_SEED.value,
    num_workers=_NUM_WORKERS.value,
  )
  try:
    build.build_image_dataset(config)
  except ValueError as e:  # includes gldv2_csv.CsvFormatError
    raise SystemExit(f"build_image_dataset: {e}") from None
  except OSError as e:
    where = getattr(e, "filename", None) or config.output_directory
    raise SystemExit(f"build_image_dataset: {where}: {e.strerror or e}") from None
  sys.stdout.flush()


if __name__ == "__main__":
  cli_flags.run(main)
