"""L2 normalisation layer (training.md §5.6)."""

from __future__ import annotations

import keras
import tensorflow as tf


class L2Normalization(keras.layers.Layer):
  """``tf.nn.l2_normalize(x, axis, epsilon=1e-6)``; epsilon bounds the squared norm below.

  Args:
    axis: the axis normalised (1 by default: per row of a ``[B, D]`` batch).
  """

  def __init__(self, axis: int = 1, **kwargs):
    super().__init__(**kwargs)
    self.axis = axis

  def call(self, inputs, axis: int | None = None):
    return tf.nn.l2_normalize(inputs, axis=self.axis if axis is None else axis, epsilon=1e-6)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self) -> dict:
    return {**super().get_config(), "axis": self.axis}
