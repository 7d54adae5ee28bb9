"""Layer tests: one shared harness + closed-form oracles (training.md §5, §8.3–8.5)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from delf.model import attention, autoencoder, backbone, heads, normalization, pooling

X = np.array([[[[0, 1], [2, 3]], [[4, 5], [6, 7]]]], np.float32)  # 1x2x2x2, §8.3


def check_layer(layer, input_shape, expected_shape, call_kwargs=None, output_index=None):
  """Shared harness: eager + symbolic shapes, get_config round trip, one finite gradient step."""
  call_kwargs = call_kwargs or {}
  x = tf.random.stateless_uniform(input_shape, seed=(1, 2), minval=-1.0, maxval=1.0)
  pick = (lambda o: o) if output_index is None else (lambda o: o[output_index])
  out = pick(layer(x, **call_kwargs))
  assert tuple(out.shape) == tuple(expected_shape)
  symbolic = pick(layer(keras.Input(batch_shape=input_shape), **call_kwargs))
  assert tuple(symbolic.shape) == tuple(expected_shape)
  clone = type(layer).from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  if layer.trainable_variables:
    with tf.GradientTape() as tape:
      outputs = tf.nest.flatten(layer(x, **call_kwargs))
      loss = tf.add_n([tf.reduce_sum(tf.square(o)) for o in outputs])
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    for v, g in zip(layer.trainable_variables, grads):
      v.assign_sub(0.01 * g)
    assert np.all(np.isfinite(pick(layer(x, **call_kwargs))))
  return out


def test_mac_spoc_gem_oracles():
  np.testing.assert_allclose(pooling.mac(X), [[6, 7]])
  np.testing.assert_allclose(pooling.spoc(X), [[3, 4]])
  np.testing.assert_allclose(pooling.gem(X, power=3, eps=1e-6), [[4.1601677, 4.9866314]], 1e-6)


def test_gem_legacy_vector_with_clamp_at_zero():
  x = np.array([[[[0, 2], [1, -1]]], [[[1, 100], [1, 0]]]], np.float32)  # §8.5
  np.testing.assert_allclose(
    pooling.gem(x, power=2, eps=0.0), [[0.707107, 1.414214], [1.0, 70.710678]], rtol=1e-5
  )


def test_gem_power_one_is_average_and_layers_wrap_functions():
  x = tf.random.stateless_uniform([2, 3, 4, 5], seed=(0, 1), minval=0.1, maxval=1.0)
  np.testing.assert_allclose(pooling.gem(x, power=1.0), tf.reduce_mean(x, [1, 2]), rtol=1e-6)
  np.testing.assert_allclose(pooling.GeM(power=3.0)(x), pooling.gem(x, power=3.0))
  np.testing.assert_allclose(pooling.MAC()(X), [[6, 7]])
  np.testing.assert_allclose(pooling.SPoC()(X), [[3, 4]])


@pytest.mark.parametrize("layer_cls", [pooling.MAC, pooling.SPoC, pooling.GeM])
def test_global_pooling_harness(layer_cls):
  check_layer(layer_cls(), (2, 3, 4, 5), (2, 5))


def test_gem_pooling_2d_oracles():
  x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
  kw = {"pool_size": (2, 2), "strides": (1, 1), "padding": "valid"}
  max_pool = keras.layers.MaxPooling2D(**kw)(x)
  avg_pool = keras.layers.AveragePooling2D(**kw)(x)
  np.testing.assert_array_equal(np.round(pooling.GeMPooling2D(power=30, **kw)(x)), max_pool)
  np.testing.assert_allclose(pooling.GeMPooling2D(power=1, **kw)(x), avg_pool, rtol=1e-6)
  check_layer(pooling.GeMPooling2D(power=3, **kw), (2, 3, 3, 4), (2, 2, 2, 4))


def test_l2_normalization():
  out = normalization.L2Normalization()(tf.constant([-4.0, 0.0, 4.0]), axis=0)
  np.testing.assert_allclose(out, [-0.70710677, 0, 0.70710677], rtol=1e-6)
  check_layer(normalization.L2Normalization(), (3, 7), (3, 7))


def test_cosine_logits_closed_form():
  p = np.array([[3.0, 4.0], [1.0, 0.0]], np.float32)
  w = np.array([[1.0, 0.0, 2.0], [0.0, 5.0, 2.0]], np.float32)
  expected = np.array([[0.6, 0.8, 7 / (5 * math.sqrt(2))], [1.0, 0.0, 1 / math.sqrt(2)]])
  np.testing.assert_allclose(heads.cosine_logits(p, w), expected, rtol=1e-6)


def test_arcface_zero_margin_is_scaled_cosine():
  cos = tf.random.stateless_uniform([4, 6], seed=(3, 4), minval=-0.99, maxval=0.99)
  labels = tf.constant([0, 5, 2, 2])
  np.testing.assert_allclose(
    heads.arcface_margin(cos, labels, margin=0.0, scale=45.25), 45.25 * cos, atol=1e-4
  )


def test_arcface_margin_only_on_true_class_and_guard():
  cos = np.array([[0.5, 0.2, -0.3], [0.1, -0.9999, 0.4]], np.float32)
  labels = np.array([0, 1])
  m, s = 0.1, 2.0
  out = heads.arcface_margin(cos, labels, margin=m, scale=s).numpy()
  expected = s * cos.copy()
  expected[0, 0] = s * math.cos(math.acos(0.5) + m)
  # Row 1: theta = acos(-0.9999) > pi - m, so the guard leaves the true class alone.
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", [1.0, -1.0, 1.0000001, -1.0000002, 1.5])
def test_arcface_no_nan_for_abs_cos_ge_one(value):
  cos = tf.Variable([[value, 0.3]], dtype=tf.float32)
  with tf.GradientTape() as tape:
    out = heads.arcface_margin(cos, tf.constant([0]), margin=0.1, scale=45.25)
    loss = tf.reduce_sum(out)
  grad = tape.gradient(loss, cos)
  assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))


def test_cosine_classifier_margin_only_in_training():
  layer = heads.CosineClassifier(4, scale_factor_init=10.0, arcface_margin=0.2)
  x = tf.random.stateless_normal([3, 8], seed=(5, 6))
  labels = tf.constant([0, 1, 3])
  plain = layer(x, labels)
  np.testing.assert_allclose(plain, 10.0 * heads.cosine_logits(x, layer.cosine_weights), 1e-5)
  margin = layer(x, labels, training=True).numpy()
  mask = np.eye(4, dtype=bool)[labels.numpy()]
  np.testing.assert_allclose(margin[~mask], plain.numpy()[~mask], rtol=1e-6)
  assert np.all(margin[mask] < plain.numpy()[mask])
  assert [v.name for v in layer.trainable_variables] == ["cosine_weights"]
  assert float(layer.scale_factor) == 10.0 and not layer.scale_factor.trainable
  check_layer(heads.CosineClassifier(4), (3, 8), (3, 4))


def test_attention_pooling_formula_on_hand_made_map():
  targets = np.zeros((1, 2, 2, 2), np.float32)
  targets[0, 0, 0] = [3, 4]  # normalised [0.6, 0.8]
  targets[0, 0, 1] = [0, 2]  # [0, 1]
  targets[0, 1, 0] = [5, 0]  # [1, 0]
  targets[0, 1, 1] = [0, 0]  # zero stays zero
  prob = np.array([2.0, 1.0, 0.5, 7.0], np.float32).reshape(1, 2, 2, 1)
  expected = (2 * np.array([0.6, 0.8]) + 1 * np.array([0, 1]) + 0.5 * np.array([1, 0])) / 4
  np.testing.assert_allclose(attention.attention_pool(targets, prob), [expected], rtol=1e-6)


def test_attention_module_outputs():
  layer = attention.AttentionModel()
  x = tf.random.stateless_uniform([2, 3, 3, 8], seed=(7, 8))
  targets = tf.random.stateless_uniform([2, 3, 3, 5], seed=(9, 8))
  feat, prob, score = layer(x, targets=targets)
  np.testing.assert_allclose(prob, tf.nn.softplus(score), rtol=1e-6)
  np.testing.assert_allclose(feat, attention.attention_pool(targets, prob), rtol=1e-6)
  assert not layer.losses  # KB-19: no silently unused regularisers.
  names = sorted(v.path for v in layer.weights)
  assert any("attn_conv1" in n for n in names) and any("attn_conv2" in n for n in names)
  check_layer(attention.AttentionModel(hidden_channels=16), (2, 3, 3, 8), (2, 8), output_index=0)
  check_layer(attention.AttentionModel(hidden_channels=16), (2, 3, 3, 8), (2, 3, 3, 1), None, 1)


def test_autoencoder_shapes_and_activation():
  layer = autoencoder.AutoencoderModel(reduced_dimension=4, expand_dimension=12)
  expanded, reduced = layer(tf.random.stateless_normal([2, 3, 3, 12], seed=(1, 1)))
  assert reduced.shape == (2, 3, 3, 4) and expanded.shape == (2, 3, 3, 12)
  assert np.min(expanded) >= 0 and np.min(reduced) < 0  # ReLU on expand, linear reduce.
  check_layer(autoencoder.AutoencoderModel(4, 12), (2, 3, 3, 12), (2, 3, 3, 4), None, 1)


def test_residual_block_harness():
  block = backbone.ResidualBlock(3, "a", [4, 4, 16], strides=2, conv_shortcut=True)
  check_layer(block, (2, 8, 8, 8), (2, 4, 4, 16))
  assert [layer.name for layer in block.weight_layers()] == [
    "res3a_branch2a",
    "bn3a_branch2a",
    "res3a_branch2b",
    "bn3a_branch2b",
    "res3a_branch2c",
    "bn3a_branch2c",
    "res3a_branch1",
    "bn3a_branch1",
  ]
