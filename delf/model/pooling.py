"""Global and local pooling: GeM, MAC, SPoC (training.md §5.6).

The maths lives in the pure functions ``gem``, ``mac`` and ``spoc``; the Keras
layers only wrap them so that tests can check the functions against closed
forms and the layers against the functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf


def mac(x: tf.Tensor, axis: Sequence[int] = (1, 2)) -> tf.Tensor:
  """Maximum activation of convolutions: max over the spatial axes."""
  return tf.reduce_max(x, axis=list(axis))


def spoc(x: tf.Tensor, axis: Sequence[int] = (1, 2)) -> tf.Tensor:
  """Sum-pooled convolutional features (as a mean, like the reference)."""
  return tf.reduce_mean(x, axis=list(axis))


def gem(
  x: tf.Tensor, axis: Sequence[int] = (1, 2), power: float = 3.0, eps: float = 1e-6
) -> tf.Tensor:
  """Generalized-mean pooling: ``mean(max(x, eps)^p)^(1/p)`` over ``axis``.

  The clamp keeps fractional powers of negative activations defined; ``p`` is a
  fixed hyper-parameter (DELG uses 3), not a learned weight.
  """
  x = tf.maximum(x, tf.cast(eps, x.dtype))
  power = tf.cast(power, x.dtype)
  return tf.pow(tf.reduce_mean(tf.pow(x, power), axis=list(axis)), 1.0 / power)


class MAC(keras.layers.Layer):
  """Global max pooling over H, W (``[B, H, W, C] -> [B, C]``)."""

  def call(self, inputs):
    return mac(inputs)


class SPoC(keras.layers.Layer):
  """Global average pooling over H, W (``[B, H, W, C] -> [B, C]``)."""

  def call(self, inputs):
    return spoc(inputs)


class GeM(keras.layers.Layer):
  """Global generalized-mean pooling with a fixed power.

  Args:
    power: the exponent p (1 = average pooling, large p -> max pooling).
    eps: lower clamp applied before the power.
  """

  def __init__(self, power: float = 3.0, eps: float = 1e-6, **kwargs):
    super().__init__(**kwargs)
    self.power = float(power)
    self.eps = float(eps)

  def call(self, inputs):
    return gem(inputs, power=self.power, eps=self.eps)

  def get_config(self) -> dict:
    return {**super().get_config(), "power": self.power, "eps": self.eps}


class GeMPooling2D(keras.layers.Layer):
  """Local generalized-mean pooling: ``avg_pool(x^p)^(1/p)`` over windows (no clamp).

  Args:
    power: the exponent p.
    pool_size, strides, padding, data_format: as for ``keras.layers.AveragePooling2D``.
  """

  def __init__(
    self,
    power: float = 20.0,
    pool_size: Sequence[int] = (2, 2),
    strides: Sequence[int] | None = None,
    padding: str = "valid",
    data_format: str = "channels_last",
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.power = float(power)
    self.pool_size = tuple(pool_size)
    self.strides = tuple(strides) if strides is not None else self.pool_size
    self.padding = padding
    self.data_format = data_format
    self._pool = keras.layers.AveragePooling2D(
      pool_size=self.pool_size,
      strides=self.strides,
      padding=self.padding,
      data_format=self.data_format,
    )

  def call(self, inputs):
    power = tf.cast(self.power, inputs.dtype)
    return tf.pow(self._pool(tf.pow(inputs, power)), 1.0 / power)

  def compute_output_shape(self, input_shape):
    return self._pool.compute_output_shape(input_shape)

  def get_config(self) -> dict:
    return {
      **super().get_config(),
      "power": self.power,
      "pool_size": self.pool_size,
      "strides": self.strides,
      "padding": self.padding,
      "data_format": self.data_format,
    }
