"""`FoldedInferenceModel`: a trained model with batch norms folded, in a reduced precision.

See `delf.export.precision` for when it is used and what runs in which type.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from delf.export.precision import validate_precision


def _fold(conv, bn) -> tuple[np.ndarray, np.ndarray]:
  """Folds an inference-mode BatchNormalization into the preceding conv (float64)."""
  kernel = conv.kernel.numpy().astype(np.float64)
  bias = conv.bias.numpy().astype(np.float64) if conv.use_bias else np.zeros(kernel.shape[-1])
  if bn is None:
    return kernel, bias
  gamma = bn.gamma.numpy().astype(np.float64) if bn.scale else 1.0
  beta = bn.beta.numpy().astype(np.float64) if bn.center else 0.0
  mean = bn.moving_mean.numpy().astype(np.float64)
  variance = bn.moving_variance.numpy().astype(np.float64)
  factor = gamma / np.sqrt(variance + bn.epsilon)
  return kernel * factor, (bias - mean) * factor + beta


class _FoldedConv(tf.Module):
  """conv + bias (+ ReLU) with the kernel stored in the compute type."""

  def __init__(self, conv, bn, dtype: tf.DType, relu: bool):
    super().__init__(name=conv.name)
    kernel, bias = _fold(conv, bn)
    self.kernel = tf.Variable(kernel.astype(np.float32), trainable=False, name="kernel")
    self.bias = tf.Variable(bias.astype(np.float32), trainable=False, name="bias")
    self._dtype = dtype
    self._strides = int(conv.strides[0])
    self._padding = conv.padding.upper()
    self._relu = relu

  def __call__(self, x: tf.Tensor, relu: bool | None = None) -> tf.Tensor:
    kernel = tf.cast(self.kernel, self._dtype)
    y = tf.nn.conv2d(x, kernel, self._strides, self._padding)
    y = tf.nn.bias_add(y, tf.cast(self.bias, self._dtype))
    return tf.nn.relu(y) if (self._relu if relu is None else relu) else y


class _FoldedBlock(tf.Module):
  def __init__(self, block, dtype: tf.DType):
    super().__init__(name=block.name)
    self.conv2a = _FoldedConv(block.conv2a, block.bn2a, dtype, relu=True)
    self.conv2b = _FoldedConv(block.conv2b, block.bn2b, dtype, relu=True)
    self.conv2c = _FoldedConv(block.conv2c, block.bn2c, dtype, relu=False)
    self.shortcut = (
      _FoldedConv(block.conv1, block.bn1, dtype, relu=False) if block.conv_shortcut else None
    )

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    y = self.conv2c(self.conv2b(self.conv2a(x)))
    shortcut = self.shortcut(x) if self.shortcut is not None else x
    return tf.nn.relu(y + shortcut)


class FoldedInferenceModel(tf.Module):
  """A trained ``Delf``/``Delg`` for inference in ``precision``, with the export-model API.

  Offers what the export modules call (``build_call``, ``global_call``,
  ``descriptor_dim``, ``local_descriptor_dim``, ``get_config``), so it can stand in for
  the Keras model in `delf.export.modules`. The Keras model is only read.
  """

  def __init__(self, model, precision: str):
    super().__init__(name="folded_" + model.name)
    self.precision = validate_precision(precision)
    dtype = tf.as_dtype(precision)
    self._dtype = dtype
    self._model_class = type(model)
    self.model_class_name = type(model).model_class_name
    self._config = model.get_config()
    self.name_ = model.name
    backbone = model.backbone
    self._block3_strides = backbone.block3_strides
    self._pooling = backbone.pooling
    self._gem_power = backbone.gem_power
    self.descriptor_dim = int(model.descriptor_dim)
    self.local_descriptor_dim = int(model.local_descriptor_dim)
    self.stem = _FoldedConv(backbone.conv1, backbone.bn_conv1, dtype, relu=True)
    self.stages = []
    for names in backbone._stage_names:
      self.stages.append([_FoldedBlock(getattr(backbone, name), dtype) for name in names])
    self.embedding = None
    if backbone.embedding_layer:
      self.embedding_kernel = tf.Variable(backbone.embedding.kernel, trainable=False)
      self.embedding_bias = tf.Variable(backbone.embedding.bias, trainable=False)
      self.embedding = True
    attention = model.attention
    self.attention_conv1 = _FoldedConv(attention.conv1, attention.bn_conv1, dtype, relu=True)
    self.attention_conv2 = _FoldedConv(attention.conv2, None, dtype, relu=False)
    self.reduce = None
    if model.use_dim_reduction:
      self.reduce = _FoldedConv(model.autoencoder.conv1, None, dtype, relu=False)

  def get_config(self) -> dict:
    return dict(self._config)

  def _block3(self, images: tf.Tensor) -> tf.Tensor:
    x = self.stem(tf.cast(images, self._dtype))
    x = tf.nn.max_pool2d(x, 3, 2, "VALID")
    for stage in self.stages[:3]:
      for block in stage:
        x = block(x)
    if self._block3_strides:
      x = tf.nn.max_pool2d(x, 1, 2, "VALID")
    return x

  def _global(self, block3: tf.Tensor) -> tf.Tensor:
    x = block3
    for block in self.stages[3]:
      x = block(x)
    x = tf.cast(x, tf.float32)
    if self._pooling == "avg":
      pooled = tf.reduce_mean(x, axis=[1, 2])
    elif self._pooling == "max":
      pooled = tf.reduce_max(x, axis=[1, 2])
    else:
      x = tf.maximum(x, 1e-6)
      pooled = tf.pow(
        tf.reduce_mean(tf.pow(x, self._gem_power), axis=[1, 2]), 1.0 / self._gem_power
      )
    if self.embedding is not None:
      pooled = tf.matmul(pooled, self.embedding_kernel) + self.embedding_bias
    return pooled

  def build_call(self, images, training: bool = False) -> dict:
    del training
    block3 = self._block3(images)
    hidden = self.attention_conv1(block3)
    score = tf.cast(self.attention_conv2(hidden), tf.float32)
    local = self.reduce(block3) if self.reduce is not None else block3
    return {
      "global_descriptor": self._global(block3),
      "attention_prob": tf.nn.softplus(score),
      "local_features": tf.cast(local, tf.float32),
    }

  def global_call(self, images, training: bool = False) -> tf.Tensor:
    del training
    return self._global(self._block3(images))
