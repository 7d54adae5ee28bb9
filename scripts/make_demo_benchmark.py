"""Writes a small Revisited-Oxford-format retrieval benchmark from the demo landmarks.

Usage:
  python -m scripts.make_demo_benchmark --output_dir=demo_benchmark [--name=demo]

Writes ``<output_dir>/images/<name>.jpg`` (queries and index images),
``<output_dir>/gnd_<name>.mat`` (the fields of gnd_roxford5k.mat: imlist,
qimlist, gnd with bbx/easy/hard/junk, 1-based) and the same ground truth as
``<output_dir>/gnd_<name>.json``. Then run extract_delg_features.py with
``--images_dir=<output_dir>/images --dataset_file_path=<output_dir>/gnd_<name>.mat``
for ``--image_set=query`` and ``--image_set=index``, and perform_retrieval.py.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags
from delf.retrieval import demo_benchmark

_OUTPUT_DIR = flags.DEFINE_string(
  "output_dir", "/tmp/demo_benchmark", "Folder for the images and ground-truth files."
)
_NAME = flags.DEFINE_string(
  "name", "demo", "Benchmark name: the ground truth goes to gnd_<name>.mat / .json."
)
_NUM_LANDMARKS = flags.DEFINE_integer(
  "num_landmarks", 4, "Landmarks with queries (each a different demo photo).", lower_bound=1
)
_QUERIES_PER_LANDMARK = flags.DEFINE_integer(
  "queries_per_landmark", 2, "Query views per landmark.", lower_bound=1
)
_NUM_DISTRACTORS = flags.DEFINE_integer(
  "num_distractors", 6, "Index images of other photos (never relevant).", lower_bound=0
)
_IMAGE_HEIGHT = flags.DEFINE_integer("image_height", 240, "Image height in pixels.", lower_bound=32)
_IMAGE_WIDTH = flags.DEFINE_integer("image_width", 320, "Image width in pixels.", lower_bound=32)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed (same seed, same files).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  info = demo_benchmark.make_demo_benchmark(
    _OUTPUT_DIR.value,
    name=_NAME.value,
    num_landmarks=_NUM_LANDMARKS.value,
    queries_per_landmark=_QUERIES_PER_LANDMARK.value,
    num_distractors=_NUM_DISTRACTORS.value,
    image_size=(_IMAGE_HEIGHT.value, _IMAGE_WIDTH.value),
    seed=_SEED.value,
  )
  print(
    f"Wrote {len(info.query_list)} queries and {len(info.index_list)} index images to "
    f"{info.images_dir}; ground truth {info.mat_path} and {info.json_path}"
  )


if __name__ == "__main__":
  cli_flags.run(main)
