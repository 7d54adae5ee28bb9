"""Tiny GLDv2-layout datasets for tests (shared: other teams' tests may import these).

Everything is cached per (pytest session, arguments) by the callers' fixtures; the
helpers themselves only write files.
"""

from __future__ import annotations

import os
import pathlib

from delf.data import demo


def make_tiny_gldv2(
  root: str | pathlib.Path,
  *,
  seed: int = 0,
  num_landmarks: int = 3,
  images_per_landmark: int = 4,
  image_size: tuple[int, int] = (48, 64),
  plant_bad_files: bool = False,
  **kwargs,
) -> demo.DemoDatasetInfo:
  """A few tiny real-photo images per landmark in the GLDv2 layout (well under a second)."""
  return demo.make_demo_dataset(
    root,
    seed=seed,
    num_landmarks=num_landmarks,
    images_per_landmark=images_per_landmark,
    image_size=image_size,
    plant_bad_files=plant_bad_files,
    **kwargs,
  )


def build_tiny_tfrecords(
  dataset_root: str | pathlib.Path,
  output_dir: str | pathlib.Path,
  *,
  num_shards: int = 2,
  validation_split: bool = True,
  num_workers: int = 1,
):
  """Runs the dataset build (clean mode) on a ``make_tiny_gldv2`` tree; returns its summary."""
  from delf.data import build

  dataset_root = pathlib.Path(dataset_root)
  config = build.BuildConfig(
    train_directory=str(dataset_root / "train" / "*" / "*" / "*"),
    output_directory=str(output_dir),
    train_csv_path=str(dataset_root / "train" / "train.csv"),
    train_clean_csv_path=str(dataset_root / "train" / "train_clean.csv"),
    num_shards=num_shards,
    generate_train_validation_splits=validation_split,
    validation_split_size=0.2,
    seed=0,
    num_workers=num_workers,
  )
  return build.build_image_dataset(config)


def run_data_script(name: str, **flag_values):
  """``tests.cli_harness.run_script`` with ``os.PathLike`` flag values turned into strings."""
  from tests.cli_harness import run_script

  return run_script(
    name, **{k: os.fspath(v) if hasattr(v, "__fspath__") else v for k, v in flag_values.items()}
  )
