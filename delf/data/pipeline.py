"""The training input pipeline: TFRecord shards -> batches of normalised images (training.md §4).

Reference behaviour kept: files in glob order (sorted, see below), ``repeat()`` then
``shuffle(100, seed)``, ``batch`` without ``drop_remainder``; pixels ``(x - 128) / 128``
(KB-14); without augmentation a bilinear squash resize to ``[S, S]`` (KB-13); with
augmentation the ImageNet-style crop (min_object_covered 0.1, aspect 3/4-4/3, area
0.08-1, 100 attempts, ``area`` resize), no flip, no colour jitter.

Ours:
* KB-5: JPEGs are decoded with 3 channels forced (grayscale/CMYK files no longer
  break batching).
* KB-11: the crop is drawn with ``stateless_sample_distorted_bounding_box`` seeded
  by ``(seed, position of the example in the shuffled stream)``: the same seed gives
  the same crops.
* KB-12: parallel ``map`` (deterministic order by default) and ``prefetch``; the
  record order is unchanged.
* The glob result is sorted: TensorFlow's local glob order is unspecified (it
  follows the directory listing); sorted order is the shard order the build wrote.
"""

from __future__ import annotations

import tensorflow as tf

NUM_CLASSES = {"gld_v1": 14951, "gld_v2": 203094, "gld_v2_clean": 81313}

_FEATURES = {
  "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
  "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
  "image/channels": tf.io.FixedLenFeature([], tf.int64, default_value=0),
  "image/format": tf.io.FixedLenFeature([], tf.string, default_value=""),
  "image/id": tf.io.FixedLenFeature([], tf.string, default_value=""),
  "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
  "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
  "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=0),
}

MIN_OBJECT_COVERED = 0.1
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
AREA_RANGE = (0.08, 1.0)
MAX_ATTEMPTS = 100


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """Parses one serialised example with the reference's full feature spec."""
  return tf.io.parse_single_example(serialized, _FEATURES)


def normalize_images(images: tf.Tensor) -> tf.Tensor:
  """uint8 RGB -> float32 ``(x - 128) / 128`` in ``[-1, 0.9921875]`` (KEEP, KB-14)."""
  return (tf.cast(images, tf.float32) - 128.0) / 128.0


def imagenet_crop(image: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
  """Random crop as in the reference's ImageNet preprocessing, seeded (KB-11)."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    tf.shape(image),
    bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
    seed=seed,
    min_object_covered=MIN_OBJECT_COVERED,
    aspect_ratio_range=ASPECT_RATIO_RANGE,
    area_range=AREA_RANGE,
    max_attempts=MAX_ATTEMPTS,
    use_image_if_no_bounding_boxes=True,
  )
  cropped = tf.slice(image, begin, size)
  resized = tf.image.resize(cropped, [image_size, image_size], method="area")
  return tf.ensure_shape(resized, [image_size, image_size, 3])


def preprocess_image(
  encoded: tf.Tensor, image_size: int, augmentation: bool, seed: tf.Tensor | None = None
) -> tf.Tensor:
  """JPEG bytes -> float32 ``[S, S, 3]`` in ``[-1, 1)``.

  Args:
    encoded: scalar string tensor with JPEG bytes.
    image_size: output side S.
    augmentation: random crop (needs ``seed``) instead of the squash resize.
    seed: int64 ``[2]`` seed of the stateless crop.
  """
  image = tf.io.decode_jpeg(encoded, channels=3)  # KB-5: always 3 channels.
  image = normalize_images(image)
  if augmentation:
    if seed is None:
      raise ValueError("augmentation needs a seed")
    return imagenet_crop(image, image_size, seed)
  image = tf.image.resize(image, [image_size, image_size])  # bilinear squash (KB-13)
  return tf.ensure_shape(image, [image_size, image_size, 3])


def example_seed(seed: int | tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """The stateless seed of the example at ``index`` of the shuffled stream."""
  return tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])


def create_dataset(
  file_pattern: str,
  image_size: int = 321,
  batch_size: int = 32,
  augmentation: bool = False,
  seed: int = 0,
  include_ids: bool = False,
  deterministic: bool = True,
  shuffle_buffer_size: int = 100,
  num_parallel_calls=tf.data.AUTOTUNE,
  repeat: bool = True,
) -> tf.data.Dataset:
  """Infinite dataset of ``(images [B,S,S,3] float32, labels [B] int64[, ids [B] string])``.

  Args:
    file_pattern: glob of TFRecord shards, e.g. ``out/train-*``.
    image_size: side S of the square output images.
    batch_size: examples per batch (the last batch of a finite stream would be
      smaller, but the stream repeats forever).
    augmentation: ImageNet-style random crop (training) instead of the squash resize.
    seed: shuffle seed and crop seed.
    include_ids: also yield the ``image/id`` strings.
    deterministic: keep the record order through the parallel map (tests, and
      reproducible training). False lets faster elements overtake slower ones.
    shuffle_buffer_size: the reference's 100 by default.
    num_parallel_calls: parallelism of the decode/augment map.
    repeat: False gives one pass over the files in glob order, neither repeated nor
      shuffled, the last batch possibly smaller (an exact validation pass).

  Raises:
    ValueError: no file matches ``file_pattern``.
  """
  files = sorted(tf.io.gfile.glob(file_pattern))
  if not files:
    raise ValueError(f"no TFRecord files match {file_pattern!r}")
  dataset = tf.data.TFRecordDataset(files)
  if repeat:
    dataset = dataset.repeat()
    dataset = dataset.shuffle(buffer_size=shuffle_buffer_size, seed=seed)
  dataset = dataset.enumerate()

  def process(index, serialized):
    features = parse_example(serialized)
    example_seed_ = example_seed(seed, index) if augmentation else None
    image = preprocess_image(features["image/encoded"], image_size, augmentation, example_seed_)
    label = features["image/class/label"]
    if include_ids:
      return image, label, features["image/id"]
    return image, label

  dataset = dataset.map(process, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
  dataset = dataset.batch(batch_size)
  return dataset.prefetch(tf.data.AUTOTUNE)
