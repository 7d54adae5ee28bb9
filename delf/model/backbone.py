"""Caffe-style ResNet-50 backbone with named endpoints (training.md §5.1).

Layer names follow the Keras ImageNet ``.h5`` (``conv1``, ``bn_conv1``,
``res2a_branch2a``, ``bn2a_branch2a``, ..., ``res2a_branch1``) so that
``delf.model.imagenet_weights`` can map every file group onto a layer.
``block_counts`` and ``width_factor`` build a tiny variant of the same class
for tests; the defaults give the real ResNet-50.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Sequence

import keras
import tensorflow as tf

from delf.model import pooling as pooling_lib
from delf.model.batch_norm import BatchNormalization

RESNET50_BLOCK_COUNTS = (3, 4, 6, 3)
_STAGE_FILTERS = ((64, 64, 256), (128, 128, 512), (256, 256, 1024), (512, 512, 2048))
ENDPOINTS = ("block0", "block0mp", "block1", "block2", "block3", "block4")


def _scaled(filters: int, width_factor: float) -> int:
  return max(1, round(filters * width_factor))


class ResidualBlock(keras.layers.Layer):
  """Bottleneck block: 1x1 (stride s) -> 3x3 -> 1x1, BN after each, optional 1x1 shortcut.

  The stride sits on the first 1x1 conv (caffe style) and every conv has a bias,
  as in the Keras ImageNet weights.

  Args:
    stage: 2..5 (layer-name stage digit).
    block: block letter ("a", "b", ...).
    filters: the three conv widths.
    strides: stride of the first conv (and of the shortcut).
    conv_shortcut: True for the first block of a stage (projection shortcut).
  """

  def __init__(
    self,
    stage: int,
    block: str,
    filters: Sequence[int],
    strides: int = 1,
    conv_shortcut: bool = False,
    **kwargs,
  ):
    kwargs.setdefault("name", f"res{stage}{block}")
    super().__init__(**kwargs)
    self.stage = stage
    self.block = block
    self.filters = tuple(int(f) for f in filters)
    self.strides = int(strides)
    self.conv_shortcut = bool(conv_shortcut)
    f1, f2, f3 = self.filters
    conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
    self.conv2a = keras.layers.Conv2D(f1, 1, strides=self.strides, name=conv + "2a")
    self.bn2a = BatchNormalization(name=bn + "2a")
    self.conv2b = keras.layers.Conv2D(f2, 3, padding="same", name=conv + "2b")
    self.bn2b = BatchNormalization(name=bn + "2b")
    self.conv2c = keras.layers.Conv2D(f3, 1, name=conv + "2c")
    self.bn2c = BatchNormalization(name=bn + "2c")
    if self.conv_shortcut:
      self.conv1 = keras.layers.Conv2D(f3, 1, strides=self.strides, name=conv + "1")
      self.bn1 = BatchNormalization(name=bn + "1")

  def weight_layers(self) -> list[keras.layers.Layer]:
    """The conv/BN layers in h5 order; each maps to one group of the ImageNet file."""
    layers = [self.conv2a, self.bn2a, self.conv2b, self.bn2b, self.conv2c, self.bn2c]
    if self.conv_shortcut:
      layers += [self.conv1, self.bn1]
    return layers

  def call(self, inputs, training=False):
    x = tf.nn.relu(self.bn2a(self.conv2a(inputs), training=training))
    x = tf.nn.relu(self.bn2b(self.conv2b(x), training=training))
    x = self.bn2c(self.conv2c(x), training=training)
    shortcut = inputs
    if self.conv_shortcut:
      shortcut = self.bn1(self.conv1(inputs), training=training)
    return tf.nn.relu(x + shortcut)

  def get_config(self) -> dict:
    return {
      **super().get_config(),
      "stage": self.stage,
      "block": self.block,
      "filters": self.filters,
      "strides": self.strides,
      "conv_shortcut": self.conv_shortcut,
    }


class ResNet50(keras.layers.Layer):
  """ResNet-50 v1 (caffe style) returning a dict of endpoints plus the pooled descriptor.

  ``call`` returns ``{"block0", "block0mp", "block1", "block2", "block3", "block4",
  "global_descriptor"}``; ``global_descriptor`` is the pooled block4, passed through
  the Dense ``embedding_layer`` when ``embedding_layer`` is True.

  Args:
    block3_strides: sub-sample block3 with a 1x1/2 max pool and run ``l5a`` at
      stride 1 (block3 at stride 32; block4 unchanged).
    pooling: "avg", "max" or "gem" global pooling of block4.
    gem_power: p of GeM pooling.
    embedding_layer: add a linear Dense after pooling.
    embedding_layer_dim: its output size.
    block_counts: blocks per stage (3, 4, 6, 3 for ResNet-50).
    width_factor: multiplies every filter count (tiny test variants).
  """

  def __init__(
    self,
    block3_strides: bool = True,
    pooling: str = "avg",
    gem_power: float = 3.0,
    embedding_layer: bool = False,
    embedding_layer_dim: int = 2048,
    block_counts: Sequence[int] = RESNET50_BLOCK_COUNTS,
    width_factor: float = 1.0,
    **kwargs,
  ):
    kwargs.setdefault("name", "backbone")
    super().__init__(**kwargs)
    if pooling not in ("avg", "max", "gem"):
      raise ValueError(f"pooling must be 'avg', 'max' or 'gem', got {pooling!r}")
    block_counts = tuple(int(n) for n in block_counts)
    if len(block_counts) != 4 or min(block_counts) < 1 or max(block_counts) > 26:
      raise ValueError(f"block_counts must be 4 integers in [1, 26], got {block_counts}")
    self.block3_strides = bool(block3_strides)
    self.pooling = pooling
    self.gem_power = float(gem_power)
    self.embedding_layer = bool(embedding_layer)
    self.embedding_layer_dim = int(embedding_layer_dim)
    self.block_counts = block_counts
    self.width_factor = float(width_factor)

    self.conv1 = keras.layers.Conv2D(
      _scaled(64, width_factor), 7, strides=2, padding="same", name="conv1"
    )
    self.bn_conv1 = BatchNormalization(name="bn_conv1")
    self.max_pool = keras.layers.MaxPooling2D(3, strides=2, padding="valid")
    # Block attribute names per stage (names, not layers: each block is tracked once).
    self._stage_names: list[tuple[str, ...]] = []
    for stage_index, (count, filters) in enumerate(zip(block_counts, _STAGE_FILTERS)):
      stage = stage_index + 2
      if stage == 2 or (stage == 5 and self.block3_strides):
        first_stride = 1
      else:
        first_stride = 2
      names = []
      for i in range(count):
        letter = string.ascii_lowercase[i]
        block = ResidualBlock(
          stage,
          letter,
          [_scaled(f, width_factor) for f in filters],
          strides=first_stride if i == 0 else 1,
          conv_shortcut=i == 0,
        )
        setattr(self, f"l{stage}{letter}", block)  # Checkpoint keys l2a..l5c.
        names.append(f"l{stage}{letter}")
      self._stage_names.append(tuple(names))
    self.subsampling_layer = keras.layers.MaxPooling2D(1, strides=2, padding="valid")
    self.local_feature_channels = _scaled(_STAGE_FILTERS[2][2], width_factor)
    self.output_channels = _scaled(_STAGE_FILTERS[3][2], width_factor)
    if self.embedding_layer:
      self.embedding = keras.layers.Dense(self.embedding_layer_dim, name="embedding_layer")

  @property
  def descriptor_dim(self) -> int:
    return self.embedding_layer_dim if self.embedding_layer else self.output_channels

  def weight_layers(self) -> Iterator[keras.layers.Layer]:
    """Every conv/BN layer that the ImageNet h5 provides (stem first)."""
    yield self.conv1
    yield self.bn_conv1
    for names in self._stage_names:
      for name in names:
        yield from getattr(self, name).weight_layers()

  def pool(self, block4: tf.Tensor) -> tf.Tensor:
    if self.pooling == "avg":
      pooled = pooling_lib.spoc(block4)
    elif self.pooling == "max":
      pooled = pooling_lib.mac(block4)
    else:
      pooled = pooling_lib.gem(block4, power=self.gem_power)
    if self.embedding_layer:
      pooled = self.embedding(pooled)
    return pooled

  def call(self, inputs, training=False) -> dict:
    endpoints = {}
    x = tf.nn.relu(self.bn_conv1(self.conv1(inputs), training=training))
    endpoints["block0"] = x
    x = self.max_pool(x)
    endpoints["block0mp"] = x
    for stage_index, names in enumerate(self._stage_names):
      for name in names:
        x = getattr(self, name)(x, training=training)
      if stage_index == 2 and self.block3_strides:
        x = self.subsampling_layer(x)
      endpoints[ENDPOINTS[stage_index + 2]] = x
    endpoints["global_descriptor"] = self.pool(x)
    return endpoints

  def get_config(self) -> dict:
    return {
      **super().get_config(),
      "block3_strides": self.block3_strides,
      "pooling": self.pooling,
      "gem_power": self.gem_power,
      "embedding_layer": self.embedding_layer,
      "embedding_layer_dim": self.embedding_layer_dim,
      "block_counts": list(self.block_counts),
      "width_factor": self.width_factor,
    }
