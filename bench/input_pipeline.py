r"""Training input pipeline throughput (images/s) at image_size 321, ours vs a reference-like chain.

Usage:
  .venv/bin/python -m bench.input_pipeline [--images=400] [--batches=20] [--batch_size=32]
      [--image_size=321] [--image_width=640 --image_height=480] [--work_dir=/tmp/delf_bench_pipe]

Builds demo TFRecords (real-photo JPEGs), then times ``delf.data.pipeline.create_dataset`` with
augmentation (seeded crop, parallel deterministic map, prefetch) and without, against the
reference's chain (sequential map, no prefetch, unseeded crop), after 3 warm-up batches; runs
alternate between the two and the best of ``--repeats`` is kept (the cores may be shared).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _reference_like(pattern: str, image_size: int, batch_size: int, augmentation: bool):
  import tensorflow as tf

  from delf.data import pipeline

  def parse(serialized):
    features = pipeline.parse_example(serialized)
    image = tf.io.decode_jpeg(features["image/encoded"])  # channels from the file
    image = (tf.cast(image, tf.float32) - 128.0) / 128.0
    if augmentation:
      begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
      )
      image = tf.image.resize(tf.slice(image, begin, size), [image_size, image_size], "area")
    else:
      image = tf.image.resize(image, [image_size, image_size])
    return image, features["image/class/label"]

  files = tf.io.gfile.glob(pattern)
  dataset = tf.data.TFRecordDataset(files).repeat().shuffle(100, seed=0)
  return dataset.map(parse).batch(batch_size)


def _time(dataset, batches: int, batch_size: int) -> float:
  iterator = iter(dataset)
  for _ in range(3):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=400)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--image_size", type=int, default=321)
  parser.add_argument("--image_width", type=int, default=640)
  parser.add_argument("--image_height", type=int, default=480)
  parser.add_argument("--work_dir", default="/tmp/delf_bench_pipe")
  parser.add_argument("--repeats", type=int, default=2, help="alternating runs; best is kept")
  args = parser.parse_args()

  from delf.data import build, demo, pipeline

  work = pathlib.Path(args.work_dir)
  data = work / f"data_{args.images}_{args.image_width}x{args.image_height}"
  records = work / f"records_{args.images}_{args.image_width}x{args.image_height}"
  if not (records / "dataset_metadata.json").exists():
    demo.make_demo_dataset(
      data,
      num_landmarks=10,
      images_per_landmark=-(-args.images // 10),
      image_size=(args.image_height, args.image_width),
      index_images_per_landmark=0,
      test_images_per_landmark=0,
      num_noisy=0,
      num_distractors=0,
    )
    with contextlib.redirect_stdout(io.StringIO()):
      build.build_image_dataset(
        build.BuildConfig(
          train_directory=str(data / "train" / "*" / "*" / "*"),
          output_directory=str(records),
          train_clean_csv_path=str(data / "train" / "train_clean.csv"),
          num_shards=4,
        )
      )
  pattern = str(records / "train-*")
  rows = []
  for augmentation in (True, False):
    ours = pipeline.create_dataset(
      pattern, args.image_size, args.batch_size, augmentation=augmentation, seed=0
    )
    reference = _reference_like(pattern, args.image_size, args.batch_size, augmentation)
    best_ours = best_reference = 0.0
    for _ in range(args.repeats):  # alternate, so both see the same background load
      best_ours = max(best_ours, _time(ours, args.batches, args.batch_size))
      best_reference = max(best_reference, _time(reference, args.batches, args.batch_size))
    rows.append((augmentation, best_ours, best_reference))
  print(f"{os.cpu_count()} cores, load average {os.getloadavg()}")
  print(
    f"{args.image_width}x{args.image_height} JPEGs -> {args.image_size}^2, batch {args.batch_size}"
  )
  print("| augmentation | ours images/s | reference-like images/s | ratio |")
  print("| --- | --- | --- | --- |")
  for augmentation, ours_rate, reference_rate in rows:
    print(
      f"| {augmentation} | {ours_rate:.0f} | {reference_rate:.0f} | "
      f"{ours_rate / reference_rate:.2f} |"
    )


if __name__ == "__main__":
  main()
