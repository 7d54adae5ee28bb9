r"""Writes a small GLDv2-layout demo dataset of real photographs (offline, deterministic).

Usage:
  python -m scripts.make_demo_dataset --output_dir=demo_data/gldv2_dataset [--seed=0]
      [--num_landmarks=8] [--images_per_landmark=8] [--image_width=256 --image_height=192]
      [--plant_bad_files]

The output has the layout of ``download_dataset.sh``: ``train/train.csv``,
``train/train_clean.csv``, ``train/train_label_to_category.csv``, ``index/index.csv``,
``index/index_image_to_landmark.csv``, ``index/index_label_to_category.csv``,
``test/test.csv``, ``test/ground_truth/{recognition,retrieval}_solution_v2.1.csv``, and the
images at ``<split>/<c0>/<c1>/<c2>/<id>.jpg``. Ours: ``view_homographies.json`` at the root
records each landmark view's homography (landmark source photo -> image pixels), from which
``delf.data.view_homographies.write_pair_homography`` makes the ``--homography_path`` file of
``match_images.py`` for two views of one landmark.
"""

from __future__ import annotations

import dataclasses

from absl import app, flags

from delf import cli_flags
from delf.data import demo

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "demo_data/gldv2_dataset", "Root of the dataset.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed: the same seed writes the same files.")
_NUM_LANDMARKS = flags.DEFINE_integer("num_landmarks", 8, "Number of landmarks (classes).", 1)
_IMAGES_PER_LANDMARK = flags.DEFINE_integer(
  "images_per_landmark", 8, "Clean train images per landmark.", 1
)
_INDEX_PER_LANDMARK = flags.DEFINE_integer(
  "index_images_per_landmark", 2, "Index (database) images per landmark.", 0
)
_TEST_PER_LANDMARK = flags.DEFINE_integer(
  "test_images_per_landmark", 1, "Test (query) images per landmark.", 0
)
_NUM_NOISY = flags.DEFINE_integer(
  "num_noisy",
  None,
  "Train images with wrong content, listed in train.csv but not in train_clean.csv "
  "(default: num_landmarks // 2, at least 1).",
  0,
)
_NUM_DISTRACTORS = flags.DEFINE_integer(
  "num_distractors", 2, "Non-landmark images in each of index/ and test/.", 0
)
_IMAGE_WIDTH = flags.DEFINE_integer("image_width", 256, "Width of every image in pixels.", 16)
_IMAGE_HEIGHT = flags.DEFINE_integer("image_height", 192, "Height of every image in pixels.", 16)
_DIFFICULTY = flags.DEFINE_float(
  "difficulty", 1.0, "Amount of viewpoint/photometric change (0 = nearly frontal views).", 0.0
)
_PLANT_BAD_FILES = flags.DEFINE_boolean(
  "plant_bad_files",
  False,
  "Also list in train_clean.csv a truncated JPEG, a grayscale JPEG, a PNG named .jpg and an "
  "id with no file, to exercise the dataset build's robustness paths.",
)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  output_dir: str
  seed: int
  num_landmarks: int
  images_per_landmark: int
  index_images_per_landmark: int
  test_images_per_landmark: int
  num_noisy: int | None
  num_distractors: int
  image_size: tuple[int, int]
  difficulty: float
  plant_bad_files: bool


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = DemoConfig(
    output_dir=_OUTPUT_DIR.value,
    seed=_SEED.value,
    num_landmarks=_NUM_LANDMARKS.value,
    images_per_landmark=_IMAGES_PER_LANDMARK.value,
    index_images_per_landmark=_INDEX_PER_LANDMARK.value,
    test_images_per_landmark=_TEST_PER_LANDMARK.value,
    num_noisy=_NUM_NOISY.value,
    num_distractors=_NUM_DISTRACTORS.value,
    image_size=(_IMAGE_HEIGHT.value, _IMAGE_WIDTH.value),
    difficulty=_DIFFICULTY.value,
    plant_bad_files=_PLANT_BAD_FILES.value,
  )
  info = demo.make_demo_dataset(**dataclasses.asdict(config))
  print(
    f"Wrote demo GLDv2 dataset to {info.root}: {len(info.landmark_ids)} landmarks, "
    f"{len(info.train_ids)} train images ({len(info.noisy_ids)} noisy), "
    f"{len(info.index_ids)} index, {len(info.test_ids)} test"
    + (f", {len(info.bad_files)} planted bad files" if info.bad_files else "")
  )


if __name__ == "__main__":
  cli_flags.run(main)
