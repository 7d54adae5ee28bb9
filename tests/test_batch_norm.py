"""Batch normalisation with the reference's moving statistics (delf.model.batch_norm).

Oracles: NumPy moments (the moving variance uses the unbiased batch variance,
the output the biased one) and Keras's own layer, which must agree on
everything else (outputs, gradients, inference, the fallback path).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from delf.model.batch_norm import BatchNormalization


def _pair(channels: int, axis: int = -1):
  ours, theirs = BatchNormalization(axis=axis), keras.layers.BatchNormalization(axis=axis)
  shape = (2, 5, 3, channels) if axis in (-1, 3) else (2, channels, 5, 3)
  ours.build(shape)
  theirs.build(shape)
  rng = np.random.default_rng(0)
  for a, b in zip(ours.weights, theirs.weights):
    value = rng.uniform(0.5, 1.5, size=a.shape).astype(np.float32)
    a.assign(value)
    b.assign(value)
  return ours, theirs


def test_training_statistics_use_the_unbiased_variance():
  layer, _ = _pair(4)
  moving_mean, moving_variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
  x = np.random.default_rng(1).normal(2.0, 3.0, size=(2, 5, 3, 4)).astype(np.float32)
  out = layer(x, training=True).numpy()
  flat = x.reshape(-1, 4).astype(np.float64)
  n = flat.shape[0]
  mean, biased = flat.mean(0), flat.var(0)
  np.testing.assert_allclose(layer.moving_mean.numpy(), 0.99 * moving_mean + 0.01 * mean, rtol=1e-6)
  np.testing.assert_allclose(
    layer.moving_variance.numpy(),
    0.99 * moving_variance + 0.01 * biased * n / (n - 1),
    rtol=1e-6,
  )
  gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
  expected = (flat - mean) / np.sqrt(biased + 1e-3) * gamma + beta
  np.testing.assert_allclose(out.reshape(-1, 4), expected, rtol=1e-5, atol=1e-5)


def test_outputs_and_gradients_equal_keras():
  ours, theirs = _pair(6)
  x = tf.constant(np.random.default_rng(2).normal(size=(2, 5, 3, 6)).astype(np.float32))
  # Inference first: training moves the moving variances apart (by design).
  for training in (False, True):
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      a = tf.reduce_sum(tf.sin(ours(x, training=training)))
      b = tf.reduce_sum(tf.sin(theirs(x, training=training)))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)
    for wa, wb in [(x, x), (ours.gamma, theirs.gamma), (ours.beta, theirs.beta)]:
      np.testing.assert_allclose(
        tape.gradient(a, wa).numpy(), tape.gradient(b, wb).numpy(), rtol=1e-4, atol=1e-5
      )
  # Moving means agree; moving variances differ exactly by Bessel's correction.
  np.testing.assert_allclose(ours.moving_mean.numpy(), theirs.moving_mean.numpy(), rtol=1e-6)
  assert np.all(ours.moving_variance.numpy() > theirs.moving_variance.numpy())


def test_not_trainable_layer_uses_moving_statistics():
  ours, theirs = _pair(3)
  ours.trainable = theirs.trainable = False
  x = np.random.default_rng(3).normal(size=(2, 5, 3, 3)).astype(np.float32)
  before = ours.moving_variance.numpy()
  np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), rtol=1e-5)
  np.testing.assert_array_equal(ours.moving_variance.numpy(), before)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5, 3)])
def test_other_ranks_fall_back_to_keras(shape):
  ours, theirs = BatchNormalization(), keras.layers.BatchNormalization()
  x = np.random.default_rng(4).normal(size=shape).astype(np.float32)
  np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), rtol=1e-6)
  np.testing.assert_allclose(ours.moving_variance, theirs.moving_variance, rtol=1e-6)


def test_mixed_precision_output_dtype():
  layer = BatchNormalization(dtype="mixed_bfloat16")
  out = layer(tf.ones([2, 4, 4, 3], tf.bfloat16), training=True)
  assert out.dtype == tf.bfloat16
  assert layer.moving_variance.dtype == "float32"
