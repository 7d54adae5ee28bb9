"""TFRecord framing and tf.train.Example serialisation without TensorFlow, checked against TF."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from delf.data import tfrecord


@pytest.mark.parametrize(
  ("data", "expected"),
  [
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),  # RFC 3720 B.4 test vectors
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
  ],
)
def test_crc32c_known_vectors(data, expected):
  assert tfrecord.crc32c(data) == expected


@pytest.mark.parametrize("size", [511, 512, 513, 1000, 4096, 4097, 65536, 100_003])
def test_crc32c_vectorised_equals_bytewise(size):
  data = os.urandom(size)
  bytewise = tfrecord._crc_raw_small(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
  assert tfrecord.crc32c(data) == bytewise


def test_example_round_trip():
  features = {
    "image/id": "0123456789abcdef",
    "image/encoded": b"\x00\xff" * 300,
    "image/height": 240,
    "image/class/label": -3,
    "list": [1, 2, 300],
  }
  parsed = tfrecord.parse_example(tfrecord.serialize_example(features))
  assert parsed == {
    "image/id": [b"0123456789abcdef"],
    "image/encoded": [b"\x00\xff" * 300],
    "image/height": [240],
    "image/class/label": [-3],
    "list": [1, 2, 300],
  }


def test_reader_rejects_corruption(tmp_path):
  path = tmp_path / "shard"
  tfrecord.write_tfrecord(path, [b"hello world", b"x" * 2000])
  assert list(tfrecord.read_tfrecord(path)) == [b"hello world", b"x" * 2000]
  data = bytearray(path.read_bytes())
  data[20] ^= 1
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="corrupt TFRecord data CRC"):
    list(tfrecord.read_tfrecord(path))
  path.write_bytes(bytes(data[:30]))
  with pytest.raises(ValueError, match="truncated"):
    list(tfrecord.read_tfrecord(path, verify=False))


def test_byte_identical_to_tensorflow_writer(tmp_path):
  tf = pytest.importorskip("tensorflow")

  def tf_feature(value):
    if isinstance(value, bytes):
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

  examples = []
  for n in range(4):
    features = {
      "image/height": 192 + n,
      "image/width": 256,
      "image/colorspace": b"RGB",
      "image/channels": 3,
      "image/format": b"JPEG",
      "image/id": os.urandom(8).hex().encode(),
      "image/encoded": os.urandom(600 + 5000 * n),
    }
    if n % 2:
      features["image/class/label"] = 2**40 + n
    examples.append(features)
  ours = tmp_path / "ours"
  theirs = tmp_path / "theirs"
  tfrecord.write_tfrecord(ours, [tfrecord.serialize_example(f) for f in examples])
  with tf.io.TFRecordWriter(str(theirs)) as writer:
    for features in examples:
      example = tf.train.Example(
        features=tf.train.Features(feature={k: tf_feature(v) for k, v in features.items()})
      )
      serialized = example.SerializeToString(deterministic=True)
      assert serialized == tfrecord.serialize_example(features)
      writer.write(serialized)
  assert ours.read_bytes() == theirs.read_bytes()
  # And TensorFlow reads our file back.
  records = [r.numpy() for r in tf.data.TFRecordDataset(str(ours))]
  for record, features in zip(records, examples):
    parsed = tf.train.Example.FromString(record).features.feature
    assert parsed["image/encoded"].bytes_list.value[0] == features["image/encoded"]


def test_reads_reference_shard(interop_dir):
  path = interop_dir / "validation-00000-of-00004.tfrecord"
  expected = json.loads((interop_dir / "validation-00000-of-00004.tfrecord.json").read_text())
  records = list(tfrecord.read_tfrecord(path))
  assert len(records) == expected["num_records"] == 5
  for record, want in zip(records, expected["records_in_order"]):
    parsed = tfrecord.parse_example(record)
    assert sorted(parsed) == sorted(expected["feature_keys_and_kinds"])
    assert parsed["image/id"] == [want["image/id"].encode()]
    assert parsed["image/class/label"] == [want["image/class/label"]]
    assert parsed["image/height"] == [want["image/height"]]
    assert parsed["image/width"] == [want["image/width"]]
    assert parsed["image/channels"] == [3]
    assert parsed["image/format"] == [b"JPEG"] and parsed["image/colorspace"] == [b"RGB"]
    encoded = parsed["image/encoded"][0]
    assert len(encoded) == want["image/encoded_num_bytes"]
    assert hashlib.sha256(encoded).hexdigest() == want["image/encoded_sha256"]
  # Re-framing the reference's records reproduces the file byte for byte.
  assert b"".join(tfrecord.frame_record(r) for r in records) == path.read_bytes()
