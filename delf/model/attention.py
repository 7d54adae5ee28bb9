"""Attention module of DELF (training.md §5.2).

The reference declared L2 kernel regularisers on both convs but its training
loop never added them to the loss (KB-19); we attach none, which gives the same
effective behaviour without a silently unused penalty.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from delf.model.batch_norm import BatchNormalization


def attention_pool(targets: tf.Tensor, prob: tf.Tensor) -> tf.Tensor:
  """Per-location L2-normalised ``targets`` weighted by ``prob``, plain mean over H, W.

  Not a sum and not divided by the total attention: ``prob`` is an unbounded
  softplus score, exactly as in the reference.
  """
  normalized = tf.nn.l2_normalize(targets, axis=-1)
  return tf.reduce_mean(normalized * prob, axis=[1, 2])


class AttentionModel(keras.layers.Layer):
  """1x1 conv (512) -> BN -> ReLU -> 1x1 conv (1) -> softplus, then attention pooling.

  ``call(inputs, targets=None, training=False)`` returns ``(feat [B, C_targets],
  prob [B, h, w, 1], score [B, h, w, 1])``; targets default to the inputs.

  Args:
    hidden_channels: filters of the first conv (512 in DELF).
  """

  def __init__(self, hidden_channels: int = 512, **kwargs):
    kwargs.setdefault("name", "attention")
    super().__init__(**kwargs)
    self.hidden_channels = int(hidden_channels)
    self.conv1 = keras.layers.Conv2D(self.hidden_channels, 1, padding="same", name="attn_conv1")
    self.bn_conv1 = BatchNormalization(axis=3, name="bn_conv1")
    self.conv2 = keras.layers.Conv2D(1, 1, padding="same", name="attn_conv2")

  def call(self, inputs, targets=None, training=False):
    x = tf.nn.relu(self.bn_conv1(self.conv1(inputs), training=training))
    score = self.conv2(x)
    prob = tf.nn.softplus(score)
    if targets is None:
      targets = inputs
    feat = attention_pool(targets, tf.cast(prob, targets.dtype))
    return feat, prob, score

  def get_config(self) -> dict:
    return {**super().get_config(), "hidden_channels": self.hidden_channels}
