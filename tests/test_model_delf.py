"""Tests of the assembled DELF/DELG models (training.md §5.4–5.9, §8.1–8.2, KB-16/17)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from delf.model import attention, imagenet_weights
from delf.model.delf_model import Delf, Delg
from delf.training import checkpoints
from tests import model_fixtures as mf

IMAGES = tf.random.stateless_uniform([2, 64, 64, 3], seed=(0, 0), minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("block3_strides", [True, False])
def test_tiny_endpoint_shapes(block3_strides):
  model = mf.make_tiny_model("Delf", block3_strides=block3_strides)
  endpoints = model.backbone(IMAGES)
  block3 = 2 if block3_strides else 4
  expected = {
    "block0": (2, 32, 32, 4),
    "block0mp": (2, 15, 15, 4),
    "block1": (2, 15, 15, 16),
    "block2": (2, 8, 8, 32),
    "block3": (2, block3, block3, 64),
    "block4": (2, 2, 2, 128),
    "global_descriptor": (2, 128),
  }
  assert {k: tuple(v.shape) for k, v in endpoints.items()} == expected
  np.testing.assert_allclose(
    endpoints["global_descriptor"], tf.reduce_mean(endpoints["block4"], [1, 2]), rtol=1e-6
  )


def test_block3_strides_does_not_change_global_features():
  a = mf.make_tiny_model("Delg", block3_strides=True)
  b = mf.make_tiny_model("Delg", block3_strides=False)
  b.set_weights(a.get_weights())
  np.testing.assert_allclose(a.global_call(IMAGES), b.global_call(IMAGES), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_class", ["Delf", "Delg"])
@pytest.mark.parametrize("use_dim_reduction", [False, True])
def test_build_call_and_heads(model_class, use_dim_reduction):
  model = mf.make_tiny_model(model_class, num_classes=7, use_dim_reduction=use_dim_reduction)
  out = model.build_call(IMAGES)
  dim = 32 if model_class == "Delg" else 128
  local = 16 if use_dim_reduction else 64
  assert tuple(out["global_descriptor"].shape) == (2, dim)
  assert tuple(out["attention_prob"].shape) == (2, 2, 2, 1)
  assert tuple(out["local_features"].shape) == (2, 2, 2, local)
  assert model.local_descriptor_dim == local and model.descriptor_dim == dim
  np.testing.assert_allclose(model.global_call(IMAGES), out["global_descriptor"], rtol=1e-6)
  passes = model.global_and_local_forward_pass(IMAGES, training=False)
  labels = tf.constant([1, 6])
  assert tuple(model.desc_logits(passes["global_descriptor"], labels).shape) == (2, 7)
  assert tuple(model.attn_logits(passes["attention_prelogits"]).shape) == (2, 7)
  moving = [v.numpy() for v in model.non_trainable_variables]
  model(IMAGES)  # training=False by default: BN statistics untouched.
  assert all(np.array_equal(a, v.numpy()) for a, v in zip(moving, model.non_trainable_variables))
  assert not hasattr(mf.make_tiny_model(model_class), "desc_classification")


def test_delg_global_path_is_gem_then_embedding():
  model = mf.make_tiny_model("Delg", gem_power=3.0)
  block4 = model.backbone(IMAGES)["block4"]
  gem = tf.pow(tf.reduce_mean(tf.pow(tf.maximum(block4, 1e-6), 3.0), [1, 2]), 1 / 3)
  np.testing.assert_allclose(
    model.global_call(IMAGES), model.backbone.embedding(gem), rtol=1e-4, atol=1e-6
  )


def test_kb17_wiring_and_gradient_routing():
  model = mf.make_tiny_model("Delf", num_classes=3, use_dim_reduction=True)
  labels = tf.constant([0, 2])
  with tf.GradientTape(persistent=True) as tape:
    out = model.global_and_local_forward_pass(IMAGES, training=True)
    attn_loss = tf.reduce_sum(
      tf.keras.losses.sparse_categorical_crossentropy(
        labels, model.attn_logits(out["attention_prelogits"]), from_logits=True
      )
    )
    recon = tf.reduce_mean(tf.square(out["block3"] - out["expanded"]))
  np.testing.assert_allclose(
    out["attention_prelogits"],
    attention.attention_pool(out["expanded"], out["attention_prob"]),
    rtol=1e-5,
  )
  backbone_vars = model.backbone.trainable_variables
  assert all(g is None for g in tape.gradient(attn_loss, backbone_vars))
  assert all(g is not None for g in tape.gradient(attn_loss, model.autoencoder.trainable_variables))
  assert all(g is None for g in tape.gradient(recon, model.attention.trainable_variables))
  assert all(g is not None for g in tape.gradient(recon, model.autoencoder.trainable_variables))


@pytest.mark.parametrize("model_class", ["Delf", "Delg"])
def test_one_train_step_like_reference(model_class):
  """§8.1/§8.2 test_train_step on the tiny model, with the library's losses and weights.

  The total is built by ``delf.training.losses`` exactly as the train step builds it
  (cross-entropies over the global batch, reconstruction mean, default weights 1 and 10),
  checked against closed forms; the update is finite and moves every weight.
  """
  from delf.training import losses
  from delf.training.config import CLIP_NORM, MOMENTUM, TrainingConfig

  defaults = TrainingConfig()
  model = mf.make_tiny_model(model_class, num_classes=10, use_dim_reduction=True)
  images = tf.random.stateless_uniform([2, 64, 64, 3], seed=(1, 1))
  labels = tf.constant([3, 9], tf.int64)
  optimizer = tf.keras.optimizers.SGD(0.001, momentum=MOMENTUM)
  with tf.GradientTape() as tape:
    out = model.global_and_local_forward_pass(images, training=True)
    desc_logits = model.desc_logits(out["global_descriptor"], labels, True)
    attn_logits = model.attn_logits(out["attention_prelogits"])
    desc = losses.classification_loss(labels, desc_logits, global_batch_size=2)
    attn = losses.classification_loss(labels, attn_logits, global_batch_size=2)
    recon = losses.reconstruction_loss(out["block3"], out["expanded"], num_replicas=1)
    loss = (
      desc + defaults.attention_loss_weight * attn + defaults.reconstruction_loss_weight * recon
    )

  # The library's losses are the reference's formulas (training.md §6.7).
  def cross_entropy(logits):
    logits = np.asarray(logits, np.float64)
    log_z = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1)) + logits.max(1)
    return float(np.sum(log_z - logits[np.arange(2), labels.numpy()]) / 2)

  assert float(desc) == pytest.approx(cross_entropy(desc_logits), rel=1e-5)
  assert float(attn) == pytest.approx(cross_entropy(attn_logits), rel=1e-5)
  diff = np.asarray(out["block3"], np.float64) - np.asarray(out["expanded"], np.float64)
  assert float(recon) == pytest.approx(float(np.mean(diff**2)), rel=1e-5)
  assert (defaults.attention_loss_weight, defaults.reconstruction_loss_weight) == (1.0, 10.0)
  before = [v.numpy() for v in model.trainable_variables]
  grads = tape.gradient(loss, model.trainable_variables)
  grads, _ = tf.clip_by_global_norm(grads, CLIP_NORM)
  optimizer.apply_gradients(zip(grads, model.trainable_variables))
  after = model.trainable_variables
  assert all(np.all(np.isfinite(v)) for v in after)
  unchanged = [a.path for b, a in zip(before, after) if np.array_equal(b, a.numpy())]
  # Only the bias of a conv that feeds a batch norm may stay put: BN subtracts the batch
  # mean, so its gradient is zero up to rounding (exactly zero with the fused kernel).
  assert all(re.fullmatch(r".*/(conv1|res\d[a-z]_branch\w+)/bias", p) for p in unchanged)
  assert len(unchanged) < len(before) // 10


def test_get_config_round_trip_and_checkpoint(tmp_path):
  model = mf.write_tiny_logdir(tmp_path, "Delg", num_classes=5, use_dim_reduction=True)
  data = json.loads((tmp_path / "model_config.json").read_text())
  assert data["model_class"] == "Delg" and data["format_version"] == 1
  assert data["config"] == model.get_config()
  assert Delg.from_config(model.get_config()).get_config() == model.get_config()
  assert (tmp_path / "delf_weights.index").exists()
  assert list(tmp_path.glob("delf_weights.data-*")) and not list(tmp_path.glob(".delf_weights*"))
  restored = checkpoints.load_trained_model(str(tmp_path))
  assert not hasattr(restored, "desc_classification")
  for key, value in model.build_call(IMAGES).items():
    np.testing.assert_allclose(restored.build_call(IMAGES)[key], value, rtol=1e-5, atol=1e-6)
  delf = mf.make_tiny_model("Delf", pooling="max", num_classes=2)
  assert Delf.from_config(delf.get_config()).get_config() == delf.get_config()


def test_checkpoint_mismatch_is_reported(tmp_path):
  mf.write_tiny_logdir(tmp_path, "Delf", num_classes=None, use_dim_reduction=False)
  with pytest.raises(ValueError, match="does not match"):
    checkpoints.load_trained_model(str(tmp_path), use_dim_reduction=True)
  with pytest.raises(ValueError, match="model config not found"):
    checkpoints.read_model_config(str(tmp_path / "nope"))


def test_autoencoder_channel_mismatch_rejected():
  with pytest.raises(ValueError, match="dim_expand_channels=1024"):
    mf.make_tiny_model("Delf", use_dim_reduction=True, dim_expand_channels=1024)


def test_imagenet_h5_every_value_lands_including_stem(tmp_path):
  model = mf.make_tiny_model("Delf", num_classes=3)
  path = str(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
  written = mf.write_imagenet_h5(model.backbone, path)
  assert "conv1" in written and "bn_conv1" in written
  count = imagenet_weights.load_imagenet_weights(model.backbone, path)
  layers = list(model.backbone.weight_layers())
  assert count == len(layers) == 2 + 4 * 8  # stem + 4 conv blocks of 8 layers
  for layer in layers:
    for variable, value in zip(layer.weights, written[layer.name], strict=True):
      np.testing.assert_array_equal(variable.numpy(), value)


def test_imagenet_h5_errors_name_the_layer(tmp_path):
  import h5py

  model = mf.make_tiny_model("Delf")
  path = str(tmp_path / "w.h5")
  mf.write_imagenet_h5(model.backbone, path)
  before = model.backbone.conv1.kernel.numpy()
  with h5py.File(path, "a") as f:
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
    assert "bn4a_branch2b" in names
    f.attrs["layer_names"] = [n.encode() for n in names if n != "bn4a_branch2b"]
  with pytest.raises(ValueError, match="'bn4a_branch2b' is missing"):
    imagenet_weights.load_imagenet_weights(model.backbone, path)
  np.testing.assert_array_equal(model.backbone.conv1.kernel.numpy(), before)  # untouched
  other = mf.make_tiny_model("Delf", width_factor=1 / 8)
  mf.write_imagenet_h5(other.backbone, path)
  with pytest.raises(ValueError, match="layer 'conv1' has weight shapes"):
    imagenet_weights.load_imagenet_weights(model.backbone, path)
  with pytest.raises(ValueError, match="not found"):
    imagenet_weights.load_imagenet_weights(model.backbone, str(tmp_path / "missing.h5"))


@pytest.mark.slow
def test_real_resnet50_parameters_and_shapes():
  images = tf.zeros([1, 321, 321, 3])
  for block3_strides, block3_size in ((True, 10), (False, 20)):
    model = Delf(block3_strides=block3_strides)
    # Keras ResNet50(include_top=False) has 23,587,712 parameters; same layers here.
    assert model.backbone.count_params() == 23_587_712
    assert len(list(model.backbone.weight_layers())) == 2 + 16 * 6 + 4 * 2
    endpoints = model.backbone(images)
    assert tuple(endpoints["block0"].shape) == (1, 161, 161, 64)
    assert tuple(endpoints["block0mp"].shape) == (1, 80, 80, 64)
    assert tuple(endpoints["block2"].shape) == (1, 40, 40, 512)
    assert tuple(endpoints["block3"].shape) == (1, block3_size, block3_size, 1024)
    assert tuple(endpoints["block4"].shape) == (1, 10, 10, 2048)
    assert tuple(endpoints["global_descriptor"].shape) == (1, 2048)
