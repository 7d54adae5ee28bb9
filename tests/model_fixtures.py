"""Helpers that build a tiny DELF/DELG model, a tiny ImageNet h5 and a tiny training logdir.

Other teams' tests may import these (e.g. the export tests need a ``delf_weights``
checkpoint without running training).
"""

from __future__ import annotations

import os

import numpy as np

# Same classes as the real model, 1 block per stage and 1/16 of the widths:
# block3 has 64 channels, block4 128.
TINY_BLOCK_COUNTS = (1, 1, 1, 1)
TINY_WIDTH_FACTOR = 1 / 16
TINY_LOCAL_CHANNELS = 64
TINY_DESCRIPTOR_CHANNELS = 128


def tiny_kwargs(**overrides) -> dict:
  """Constructor kwargs of a tiny model (autoencoder sizes consistent with it)."""
  kwargs = {
    "block_counts": TINY_BLOCK_COUNTS,
    "width_factor": TINY_WIDTH_FACTOR,
    "dim_expand_channels": TINY_LOCAL_CHANNELS,
    "reduced_dimension": 16,
  }
  kwargs.update(overrides)
  return kwargs


def make_tiny_model(model_class: str = "Delf", **overrides):
  """A tiny ``Delf`` or ``Delg`` (DELG embedding 32-d unless overridden)."""
  from delf.model.delf_model import Delf, Delg

  if model_class == "Delg":
    overrides.setdefault("embedding_layer_dim", 32)
    return Delg(**tiny_kwargs(**overrides))
  return Delf(**tiny_kwargs(**overrides))


def write_imagenet_h5(backbone, path: str | os.PathLike, seed: int = 0) -> dict:
  """Writes random weights for every conv/BN layer of ``backbone`` in the Keras h5 layout.

  Returns ``{layer_name: [arrays in weight_names order]}``. BN variances are
  positive, as in a real file.
  """
  import h5py

  rng = np.random.default_rng(seed)
  written = {}
  names = []
  with h5py.File(path, "w") as f:
    for layer in backbone.weight_layers():
      group = f.create_group(layer.name)
      if "bn" in layer.name:
        suffixes = ["gamma:0", "beta:0", "moving_mean:0", "moving_variance:0"]
      else:
        suffixes = ["kernel:0", "bias:0"]
      weight_names = []
      arrays = []
      for suffix, variable in zip(suffixes, layer.weights):
        value = rng.normal(size=tuple(variable.shape)).astype(np.float32)
        if suffix == "moving_variance:0":
          value = np.abs(value) + 0.5
        weight_name = f"{layer.name}/{suffix}"
        group.create_dataset(weight_name, data=value)
        weight_names.append(weight_name.encode())
        arrays.append(value)
      group.attrs["weight_names"] = weight_names
      written[layer.name] = arrays
      names.append(layer.name.encode())
    f.attrs["layer_names"] = names
  return written


def write_tiny_logdir(
  logdir: str | os.PathLike, model_class: str = "Delg", num_classes: int | None = 5, **overrides
):
  """Writes ``delf_weights`` + ``model_config.json`` of a tiny model into ``logdir``.

  Returns the model (with random weights) so tests can compare outputs.
  """
  from delf.training import checkpoints

  os.makedirs(logdir, exist_ok=True)
  model = make_tiny_model(model_class, num_classes=num_classes, **overrides)
  checkpoints.write_model_weights(model, os.fspath(logdir))
  checkpoints.write_model_config(model, os.fspath(logdir))
  return model


def _source_photos() -> list[np.ndarray]:
  from skimage import data

  return [
    data.astronaut(),
    data.coffee(),
    data.chelsea(),
    data.rocket(),
    data.immunohistochemistry(),
  ]


def _encode_jpeg(image: np.ndarray) -> bytes:
  import io

  from PIL import Image

  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def make_example(image_id: str, jpeg: bytes, height: int, width: int, label: int | None) -> bytes:
  """A serialised ``tf.train.Example`` with the keys of training.md §3.5."""
  import tensorflow as tf

  def b(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

  def i(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

  feature = {
    "image/height": i(height),
    "image/width": i(width),
    "image/colorspace": b(b"RGB"),
    "image/channels": i(3),
    "image/format": b(b"JPEG"),
    "image/id": b(image_id.encode()),
    "image/encoded": b(jpeg),
  }
  if label is not None:
    feature["image/class/label"] = i(label)
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tiny_tfrecords(
  directory: str | os.PathLike,
  num_classes: int = 4,
  train_per_class: int = 8,
  validation_per_class: int = 2,
  image_size: int = 64,
  seed: int = 0,
  label_overrides: dict[str, int] | None = None,
  metadata_num_classes: int | None = None,
) -> dict:
  """Writes an easy ``num_classes``-class set: each class = random crops of one real photo.

  Files: ``train-0000{0,1}-of-00002``, ``validation-00000-of-00001`` (+ a
  ``dataset_metadata.json`` when ``metadata_num_classes`` is given).
  ``label_overrides`` maps image ids (``"train_<class>_<i>"``) to a replacement
  label (e.g. an out-of-range one). Returns ``{"train": [ids], "validation": [ids]}``.
  """
  import json

  import tensorflow as tf
  from PIL import Image

  rng = np.random.default_rng(seed)
  photos = _source_photos()
  if num_classes > len(photos):
    raise ValueError(f"at most {len(photos)} classes")
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  ids: dict[str, list[str]] = {"train": [], "validation": []}
  records: dict[str, list[bytes]] = {"train": [], "validation": []}
  for split, per_class in (("train", train_per_class), ("validation", validation_per_class)):
    for label in range(num_classes):
      photo = photos[label]
      h, w = photo.shape[:2]
      for k in range(per_class):
        side = int(rng.integers(min(h, w) // 2, min(h, w)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(np.ascontiguousarray(photo[y : y + side, x : x + side]))
        crop = np.asarray(crop.resize((image_size, image_size), Image.BILINEAR))
        image_id = f"{split}_{label}_{k}"
        value = (label_overrides or {}).get(image_id, label)
        records[split].append(
          make_example(image_id, _encode_jpeg(crop), image_size, image_size, value)
        )
        ids[split].append(image_id)
    order = rng.permutation(len(records[split]))
    records[split] = [records[split][i] for i in order]
    ids[split] = [ids[split][i] for i in order]
  shards = {"train": 2, "validation": 1}
  for split, count in shards.items():
    bounds = np.linspace(0, len(records[split]), count + 1).astype(int)
    for s in range(count):
      path = os.path.join(directory, f"{split}-{s:05d}-of-{count:05d}")
      with tf.io.TFRecordWriter(path) as writer:
        for record in records[split][bounds[s] : bounds[s + 1]]:
          writer.write(record)
  if metadata_num_classes is not None:
    with open(os.path.join(directory, "dataset_metadata.json"), "w") as f:
      json.dump({"format_version": 1, "num_classes": metadata_num_classes}, f)
  return ids
