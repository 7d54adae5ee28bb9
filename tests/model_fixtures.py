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
