"""Test helper: checkpoints in the reference's layout, written from our side.

The reference (training.md §5) keeps the ResNet blocks as attributes ``l2a`` ..
``l5c`` holding ``conv2a``/``bn2a``/``conv2b``/``bn2b``/``conv2c``/``bn2c`` and,
in the first block of a stage, ``conv_shortcut``/``bn_shortcut``; the stem is
``backbone/conv1``/``backbone/bn_conv1``, DELG's embedding
``backbone/embedding_layer``; the attention holds ``conv1``/``bn_conv1``/``conv2``,
the autoencoder ``conv1``/``conv2``; the heads are ``desc_classification`` and
``attn_classification`` (Dense), and DELG keeps ``cosine_weights`` and
``scale_factor`` on the model itself. Its variables are named after the Keras
layer names (``res2a_branch2a/kernel``, ``attention/attn_conv1/kernel``), which
its SGD reuses for the momentum (``SGD/m/<name>``).

``reference_values`` walks our model attribute by attribute and writes down
where each value sits in the reference: an oracle written from the spec,
independent of ``delf.model.reference_weights`` (whose rules work on layer
names). The writers put copies of the values into new variables nested like
the reference's objects, in the three files the reference produces.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

_CONV = ("kernel", "bias")
_BN = ("gamma", "beta", "moving_mean", "moving_variance")


def _layer(values: dict, path: str, name: str, layer, weight_names) -> None:
  for weight_name, variable in zip(weight_names, layer.weights, strict=True):
    values[f"{path}/{weight_name}"] = (np.array(variable.numpy()), f"{name}/{weight_name}")


def reference_values(model) -> dict[str, tuple[np.ndarray, str]]:
  """``{reference object path: (value, reference variable name)}`` for ``model``."""
  values: dict[str, tuple[np.ndarray, str]] = {}
  backbone = model.backbone
  _layer(values, "backbone/conv1", "conv1", backbone.conv1, _CONV)
  _layer(values, "backbone/bn_conv1", "bn_conv1", backbone.bn_conv1, _BN)
  for stage, count in zip((2, 3, 4, 5), model.block_counts):
    for i in range(count):
      block_name = f"{stage}{'abcdefghijklmnopqrstuvwxyz'[i]}"
      block = getattr(backbone, f"l{block_name}")
      base = f"backbone/l{block_name}"
      for branch in ("2a", "2b", "2c"):
        _layer(values, f"{base}/conv{branch}", f"res{block_name}_branch{branch}",
               getattr(block, f"conv{branch}"), _CONV)  # fmt: skip
        _layer(values, f"{base}/bn{branch}", f"bn{block_name}_branch{branch}",
               getattr(block, f"bn{branch}"), _BN)  # fmt: skip
      if i == 0:
        _layer(values, f"{base}/conv_shortcut", f"res{block_name}_branch1", block.conv1, _CONV)
        _layer(values, f"{base}/bn_shortcut", f"bn{block_name}_branch1", block.bn1, _BN)
  if model.embedding_layer:
    _layer(values, "backbone/embedding_layer", "embedding_layer", backbone.embedding, _CONV)
  attention = model.attention
  _layer(values, "attention/conv1", "attention/attn_conv1", attention.conv1, _CONV)
  _layer(values, "attention/bn_conv1", "attention/bn_conv1", attention.bn_conv1, _BN)
  _layer(values, "attention/conv2", "attention/attn_conv2", attention.conv2, _CONV)
  if model.use_dim_reduction:
    _layer(values, "autoencoder/conv1", "autoencoder/autoenc_conv1", model.autoencoder.conv1, _CONV)
    _layer(values, "autoencoder/conv2", "autoencoder/autoenc_conv2", model.autoencoder.conv2, _CONV)
  if model.num_classes:
    head = model.desc_classification
    if type(model).model_class_name == "Delg":
      values["cosine_weights"] = (np.array(head.cosine_weights.numpy()), "cosine_weights")
      values["scale_factor"] = (np.array(head.scale_factor.numpy()), "scale_factor")
    else:
      _layer(values, "desc_classification", "desc_fc", head, _CONV)
    _layer(values, "attn_classification", "att_fc", model.attn_classification, _CONV)
  return values


def _tree(values: dict, drop=()) -> tuple[tf.Module, dict[str, tf.Variable]]:
  root = tf.Module()
  created = {}
  for path, (value, name) in values.items():
    if path in drop:
      continue
    *parents, leaf = path.split("/")
    node = root
    for part in parents:
      if part not in vars(node):
        setattr(node, part, tf.Module())
      node = getattr(node, part)
    variable = tf.Variable(value, name=name)
    setattr(node, leaf, variable)
    created[path] = variable
  return root, created


def _children(module: tf.Module) -> dict:
  return {k: v for k, v in vars(module).items() if not k.startswith("_")}


def write_delf_weights(model, prefix: str, drop=()) -> str:
  """The reference's ``<logdir>/delf_weights`` (Keras ``save_weights``: the model is the root)."""
  root, _ = _tree(reference_values(model), drop)
  os.makedirs(os.path.dirname(prefix), exist_ok=True)
  return tf.train.Checkpoint(**_children(root)).write(prefix)


def write_training_checkpoint(model, prefix: str, step: int, momentum_seed: int = 0):
  """The reference's ``delf_tf2-ckpt/ckpt-<step>``: model, SGD step and momentum.

  Returns ``{reference path: momentum array}`` for the trainable variables.
  """
  values = reference_values(model)
  root, created = _tree(values)
  rng = np.random.default_rng(momentum_seed)
  trainable = {
    path
    for path in values
    if not path.endswith(("moving_mean", "moving_variance")) and path != "scale_factor"
  }
  optimizer = tf.Module()
  optimizer._iterations = tf.Variable(np.int64(step), name="iteration")
  # Slots in a shuffled order: they must be matched by name, not by position.
  order = sorted(trainable)
  rng.shuffle(order)
  momentum, slots = {}, [optimizer._iterations]
  for path in order:
    value = rng.normal(size=values[path][0].shape).astype(np.float32)
    momentum[path] = value
    slots.append(tf.Variable(value, name=f"SGD/m/{created[path].name.split(':')[0]}"))
  optimizer._variables = slots
  os.makedirs(os.path.dirname(prefix), exist_ok=True)
  tf.train.Checkpoint(model=root, optimizer=optimizer).write(prefix)
  return momentum


def write_saved_model(model, directory: str) -> str:
  """A SavedModel laid out like the reference's exports (the model under ``_model``)."""
  root, _ = _tree(reference_values(model))
  module = tf.Module()
  module._model = root
  tf.saved_model.save(module, directory)
  return directory
