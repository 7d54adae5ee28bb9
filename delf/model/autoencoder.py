"""DELG dimensionality-reduction autoencoder on block3 (training.md §5.3)."""

from __future__ import annotations

import keras


class AutoencoderModel(keras.layers.Layer):
  """1x1 conv to ``reduced_dimension`` (linear), then 1x1 conv back (ReLU).

  ``call`` returns ``(expanded, reduced)``; ``reduced`` are the exported local
  descriptors, ``expanded`` the reconstruction of block3.

  Args:
    reduced_dimension: local descriptor size (128 by default).
    expand_dimension: block3 channels reconstructed (1024 for ResNet-50).
  """

  def __init__(self, reduced_dimension: int = 128, expand_dimension: int = 1024, **kwargs):
    kwargs.setdefault("name", "autoencoder")
    super().__init__(**kwargs)
    self.reduced_dimension = int(reduced_dimension)
    self.expand_dimension = int(expand_dimension)
    self.conv1 = keras.layers.Conv2D(
      self.reduced_dimension, 1, padding="same", name="autoenc_conv1"
    )
    self.conv2 = keras.layers.Conv2D(
      self.expand_dimension, 1, padding="same", activation="relu", name="autoenc_conv2"
    )

  def call(self, inputs):
    reduced = self.conv1(inputs)
    expanded = self.conv2(reduced)
    return expanded, reduced

  def get_config(self) -> dict:
    return {
      **super().get_config(),
      "reduced_dimension": self.reduced_dimension,
      "expand_dimension": self.expand_dimension,
    }
