"""Batch normalisation with the statistics of the reference's Keras (fused batch norm).

The reference ran on Keras 2, whose ``BatchNormalization`` uses TensorFlow's
fused kernel: the output is normalised with the biased batch variance, but the
moving variance is updated with the *unbiased* one (Bessel's correction,
``n / (n - 1)`` with ``n = batch x height x width``). Keras 3 updates it with the
biased variance. At a batch of 32 at 321 px the factor is ~1.0003 for block4,
but on small batches and feature maps it is not: the fidelity suite measured
moving variances 7-9 % of their update apart after one step at 64 px, batch 4.
This layer uses the same fused kernel in training and inference, so the
moving statistics (and the numerics of the normalisation itself) are the
reference's. Variables, names, arguments and checkpoints are Keras's.

Inputs of rank 4 with the channel axis last take the fused path; anything
else (other ranks or axes, masks, renorm) falls back to Keras's implementation.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class BatchNormalization(keras.layers.BatchNormalization):
  """``keras.layers.BatchNormalization`` whose moving variance uses the unbiased batch variance."""

  def _fusable(self, inputs, mask) -> bool:
    rank = len(inputs.shape)
    axis = self.axis if isinstance(self.axis, int) else None
    return (
      mask is None
      and not self.renorm
      and rank == 4
      and axis in (3, -1)
      and self.scale
      and self.center
    )

  def call(self, inputs, training=None, mask=None):
    if not self._fusable(inputs, mask):
      return super().call(inputs, training=training, mask=mask)
    # Computed in float32 under mixed precision too, as Keras does.
    x = tf.cast(inputs, tf.float32)
    gamma = tf.cast(self.gamma, tf.float32)
    beta = tf.cast(self.beta, tf.float32)
    moving_mean = tf.cast(self.moving_mean, tf.float32)
    moving_variance = tf.cast(self.moving_variance, tf.float32)
    if training and self.trainable:
      outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        x, gamma, beta, epsilon=self.epsilon, is_training=True, data_format="NHWC"
      )
      # ``variance`` is the batch variance with Bessel's correction (what Keras 2 averaged).
      self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
      self.moving_variance.assign(
        moving_variance * self.momentum + variance * (1.0 - self.momentum)
      )
    else:
      outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x,
        gamma,
        beta,
        mean=moving_mean,
        variance=moving_variance,
        epsilon=self.epsilon,
        is_training=False,
        data_format="NHWC",
      )
    return tf.cast(outputs, self.compute_dtype)
