"""Loads the Keras ImageNet ResNet-50 ``.h5`` into the backbone (training.md §5.1, KB-16).

File layout (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``): the
file attribute ``layer_names`` lists the groups; each group's attribute
``weight_names`` lists its datasets in order (conv: kernel, bias; BN: gamma,
beta, moving_mean, moving_variance). Unlike the reference we also load the
stem (``conv1``, ``bn_conv1``) and check every layer before assigning any.
"""

from __future__ import annotations

import os

import numpy as np


def _decode(name) -> str:
  return name.decode("utf8") if isinstance(name, bytes) else str(name)


def read_imagenet_weights(h5_path: str, layer_names) -> dict[str, list[np.ndarray]]:
  """Reads the arrays of ``layer_names`` from the h5 (in ``weight_names`` order).

  Raises:
    ValueError: the file is missing or unreadable, or a layer is not in it.
  """
  import h5py

  if not os.path.isfile(h5_path):
    raise ValueError(f"{h5_path}: ImageNet weights file not found")
  try:
    f = h5py.File(h5_path, "r")
  except OSError as e:
    raise ValueError(f"{h5_path}: not a readable HDF5 file ({e})") from None
  with f:
    if "layer_names" not in f.attrs:
      raise ValueError(f"{h5_path}: no 'layer_names' attribute (not a Keras weights file)")
    available = {_decode(n) for n in f.attrs["layer_names"]}
    weights = {}
    for name in layer_names:
      if name not in available:
        raise ValueError(f"{h5_path}: layer '{name}' is missing from the ImageNet weights file")
      group = f[name]
      weights[name] = [np.asarray(group[_decode(w)]) for w in group.attrs["weight_names"]]
  return weights


def load_imagenet_weights(backbone, h5_path: str) -> int:
  """Assigns every conv/BN layer of ``backbone`` (stem included) from the h5.

  The backbone must already be built (call it once on a dummy batch; no
  optimizer step is needed). All layers are checked before any is assigned,
  so a bad file leaves the weights untouched.

  Returns:
    The number of layers loaded.

  Raises:
    ValueError: naming the layer that is missing or whose shapes differ.
  """
  layers = list(backbone.weight_layers())
  arrays = read_imagenet_weights(h5_path, [layer.name for layer in layers])
  for layer in layers:
    expected = [tuple(v.shape) for v in layer.weights]
    got = [a.shape for a in arrays[layer.name]]
    if expected != got:
      raise ValueError(
        f"{h5_path}: layer '{layer.name}' has weight shapes {got}, the model expects {expected}"
      )
  for layer in layers:
    for variable, value in zip(layer.weights, arrays[layer.name]):
      variable.assign(value)
  return len(layers)
