"""Input pipeline (training.md §4): parsing, normalisation, seeded crops, order, KB-5/11/12."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from delf.data import pipeline, tfrecord  # noqa: E402
from tests.data_fixtures import build_tiny_tfrecords, make_tiny_gldv2  # noqa: E402


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  root = tmp_path_factory.mktemp("gldv2")
  info = make_tiny_gldv2(root, num_landmarks=3, images_per_landmark=4, plant_bad_files=True)
  output = tmp_path_factory.mktemp("records")
  summary = build_tiny_tfrecords(root, output, num_shards=2, validation_split=True)
  encoded = {}
  for path in sorted(output.glob("*-of-*")):
    for record in tfrecord.read_tfrecord(path):
      example = tfrecord.parse_example(record)
      encoded[example["image/id"][0].decode()] = (
        example["image/encoded"][0],
        example["image/class/label"][0],
      )
  return info, output, summary, encoded


def _jpeg(array: np.ndarray, mode: str | None = None) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array, mode=mode).save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def test_num_classes_table():
  assert pipeline.NUM_CLASSES == {"gld_v1": 14951, "gld_v2": 203094, "gld_v2_clean": 81313}


def test_batches_shapes_ranges_and_labels(shards):
  _, output, summary, encoded = shards
  dataset = pipeline.create_dataset(
    str(output / "train-*"), image_size=32, batch_size=5, augmentation=True, include_ids=True
  )
  images, labels, ids = next(iter(dataset))
  assert images.shape == (5, 32, 32, 3) and images.dtype == tf.float32
  assert labels.dtype == tf.int64 and ids.dtype == tf.string
  assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) < 1.0
  for label, image_id in zip(labels.numpy(), ids.numpy()):
    assert encoded[image_id.decode()][1] == label
  # Infinite: more batches than records.
  count = sum(1 for _ in dataset.take(2 * summary.num_examples["train"]))
  assert count == 2 * summary.num_examples["train"]


def test_same_seed_same_batches_other_seed_differs(shards):
  _, output, _, _ = shards

  def first_batches(seed):
    dataset = pipeline.create_dataset(
      str(output / "train-*"), image_size=24, batch_size=4, augmentation=True, seed=seed
    )
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(3)]

  a, b, c = first_batches(1), first_batches(1), first_batches(2)
  for (xa, ya), (xb, yb) in zip(a, b):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_eager_equals_dataset_preprocessing(shards):
  _, output, _, encoded = shards
  for augmentation in (True, False):
    dataset = pipeline.create_dataset(
      str(output / "train-*"),
      image_size=40,
      batch_size=1,
      augmentation=augmentation,
      seed=5,
      include_ids=True,
    )
    for index, (image, _, image_id) in enumerate(dataset.take(6)):
      data = encoded[image_id.numpy()[0].decode()][0]
      seed = pipeline.example_seed(5, tf.constant(index, tf.int64))
      eager = pipeline.preprocess_image(tf.constant(data), 40, augmentation, seed)
      np.testing.assert_allclose(image.numpy()[0], eager.numpy(), atol=1e-6)


def test_record_order_follows_reference_semantics(shards):
  # Glob (sorted) order -> repeat -> shuffle(100, seed): the same stream as a
  # plain tf.data chain with the reference's sequential map.
  _, output, _, _ = shards
  files = sorted(str(p) for p in output.glob("train-*"))
  ids = tf.data.TFRecordDataset(files).repeat().shuffle(100, seed=3)
  ids = ids.map(lambda r: pipeline.parse_example(r)["image/id"]).batch(4)
  ours = pipeline.create_dataset(
    str(output / "train-*"), image_size=8, batch_size=4, seed=3, include_ids=True
  )
  for expected, (_, _, got) in zip(ids.take(5), ours.take(5)):
    assert expected.numpy().tolist() == got.numpy().tolist()


def test_squash_resize_is_identity_at_native_square_size():
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
  data = _jpeg(pixels)
  decoded = tf.io.decode_jpeg(data, channels=3).numpy().astype(np.float32)
  image = pipeline.preprocess_image(tf.constant(data), 32, augmentation=False)
  np.testing.assert_allclose(image.numpy(), (decoded - 128.0) / 128.0, atol=1e-6)
  pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
  assert np.abs(decoded - pil).mean() < 2.0  # the file decodes as the photo it is
  # A non-square image is squashed (aspect ratio not kept): a left/right split stays split.
  half = np.zeros((20, 60, 3), np.uint8)
  half[:, 30:] = 255
  squashed = pipeline.preprocess_image(tf.constant(_jpeg(half)), 16, augmentation=False).numpy()
  assert squashed[:, :6].max() < -0.9 and squashed[:, 10:].min() > 0.9


def test_grayscale_and_cmyk_jpegs_decode_to_three_channels():
  gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
  for data in (_jpeg(gray, "L"), _cmyk_jpeg()):
    for augmentation in (False, True):
      seed = pipeline.example_seed(0, tf.constant(0, tf.int64))
      image = pipeline.preprocess_image(tf.constant(data), 16, augmentation, seed)
      assert image.shape == (16, 16, 3)
  image = pipeline.preprocess_image(tf.constant(_jpeg(gray, "L")), 32, False).numpy()
  np.testing.assert_allclose(image[..., 0], image[..., 2])


def _cmyk_jpeg() -> bytes:
  buffer = io.BytesIO()
  Image.new("CMYK", (24, 16), (10, 200, 30, 5)).save(buffer, format="JPEG")
  return buffer.getvalue()


def test_planted_grayscale_image_batches(shards):
  info, output, _, encoded = shards
  gray_id = next(i for i, kind in info.bad_files.items() if kind == "grayscale")
  assert gray_id in encoded
  dataset = pipeline.create_dataset(
    str(output / "*-of-*"), image_size=16, batch_size=len(encoded), include_ids=True
  )
  images, _, ids = next(iter(dataset))
  assert images.shape[-1] == 3
  assert gray_id.encode() in set(ids.numpy().tolist())


def test_augmentation_crops_vary_and_stay_in_range():
  rng = np.random.default_rng(1)
  data = _jpeg(rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8))
  crops = [
    pipeline.preprocess_image(
      tf.constant(data), 20, True, pipeline.example_seed(0, tf.constant(i, tf.int64))
    ).numpy()
    for i in range(4)
  ]
  assert all(c.shape == (20, 20, 3) for c in crops)
  assert len({c.tobytes() for c in crops}) > 1
  assert all(c.min() >= -1.0 and c.max() < 1.0 for c in crops)


def test_reads_reference_shard(interop_dir):
  path = str(interop_dir / "validation-00000-of-00004.tfrecord")
  expected = json.loads((interop_dir / "validation-00000-of-00004.tfrecord.json").read_text())
  want = {r["image/id"]: r["image/class/label"] for r in expected["records_in_order"]}
  parsed = [pipeline.parse_example(r) for r in tf.data.TFRecordDataset(path)]
  assert [p["image/id"].numpy().decode() for p in parsed] == list(want)
  assert all(p["image/filename"].numpy() == b"" for p in parsed)  # KB-9 default
  dataset = pipeline.create_dataset(path, image_size=64, batch_size=10, include_ids=True)
  images, labels, ids = next(iter(dataset))
  assert images.shape == (10, 64, 64, 3)
  for label, image_id in zip(labels.numpy(), ids.numpy()):
    assert want[image_id.decode()] == label


def test_no_files_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="no TFRecord files match"):
    pipeline.create_dataset(str(tmp_path / "train-*"))
