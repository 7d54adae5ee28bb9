"""The fused momentum-SGD update and the cheaper cosine head change no mathematics (issue 12).

Oracles: Keras's SGD (the update formula), ``tf.clip_by_global_norm`` and
``l2_normalize`` (the cosine classifier), and today's training path
(``fused_updates=False``: Keras SGD + tf.clip_by_global_norm) for 20 steps.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from delf.model import heads
from delf.model.heads import cosine_logits
from delf.training import loop
from delf.training import optimizer as optimizer_lib
from delf.training.loop import train
from tests import model_fixtures as mf
from tests.test_train import tiny_config


def _variables(seed: int):
  rng = np.random.default_rng(seed)
  return [
    tf.Variable(rng.normal(size=(64, 300)).astype(np.float32)),
    tf.Variable(rng.normal(size=(300,)).astype(np.float32)),
  ]


def test_fused_update_is_keras_sgd_bit_for_bit():
  rng = np.random.default_rng(0)
  fused_vars, keras_vars = _variables(1), _variables(1)
  fused = optimizer_lib.FusedMomentumSGD(learning_rate=0.01, momentum=0.9)
  plain = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
  fused.build(fused_vars)
  plain.build(keras_vars)
  for step in range(5):
    grads = [tf.constant(rng.normal(size=v.shape).astype(np.float32)) for v in fused_vars]
    lr = 0.01 * (1 - step / 10)
    fused.learning_rate = lr
    plain.learning_rate = lr
    tf.function(lambda g=grads: fused.apply_gradients(zip(g, fused_vars)))()
    tf.function(lambda g=grads: plain.apply_gradients(zip(g, keras_vars)))()
  for a, b in zip(fused_vars, keras_vars):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  for a, b in zip(fused.variables, plain.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())  # momenta and iterations
  assert int(fused.iterations.numpy()) == 5


@pytest.mark.parametrize("norm_scale", [0.5, 40.0])  # not clipped / clipped
def test_clipping_folded_into_the_update(norm_scale):
  rng = np.random.default_rng(2)
  fused_vars, keras_vars = _variables(3), _variables(3)
  fused = optimizer_lib.FusedMomentumSGD(learning_rate=0.05, momentum=0.9)
  plain = keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)
  fused.build(fused_vars)
  plain.build(keras_vars)
  for _ in range(3):
    grads = [rng.normal(size=v.shape).astype(np.float32) for v in fused_vars]
    total = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    grads = [tf.constant(g * np.float32(norm_scale * 10 / total)) for g in grads]

    @tf.function
    def fused_step(grads=grads):
      unscaled, norm = optimizer_lib.clip_by_global_norm(grads, 10.0, fold_into=fused)
      fused.apply_gradients(zip(unscaled, fused_vars))
      return norm

    @tf.function
    def plain_step(grads=grads):
      clipped, norm = tf.clip_by_global_norm(grads, 10.0)
      plain.apply_gradients(zip(clipped, keras_vars))
      return norm

    assert float(fused_step()) == float(plain_step())
  for a, b in zip(fused_vars, keras_vars):
    if norm_scale < 1:
      np.testing.assert_array_equal(a.numpy(), b.numpy())  # factor exactly 1
    else:
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)


def test_cosine_logits_and_gradients_equal_the_normalised_product():
  rng = np.random.default_rng(4)
  x = tf.constant(rng.normal(size=(5, 24)).astype(np.float32))
  weights = tf.constant(rng.normal(size=(24, 11)).astype(np.float32))
  weights = tf.concat([weights[:, :10], tf.zeros([24, 1])], axis=1)  # a zero column
  upstream = tf.constant(rng.normal(size=(5, 11)).astype(np.float32))

  def reference(x, w):
    return tf.matmul(tf.nn.l2_normalize(x, axis=1), tf.nn.l2_normalize(w, axis=0))

  results = []
  for function in (reference, cosine_logits):
    with tf.GradientTape() as tape:
      tape.watch([x, weights])
      loss = tf.reduce_sum(function(x, weights) * upstream)
    results.append([function(x, weights), *tape.gradient(loss, [x, weights])])
  for got, expected in zip(results[1], results[0]):
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_dense_classifier_is_keras_dense_and_its_gram_norm_the_kernel_gradient_norm(
  monkeypatch,
):
  monkeypatch.setattr(heads, "LARGE_HEAD_ELEMENTS", 0)  # this small head takes the new path
  rng = np.random.default_rng(6)
  x = tf.constant(rng.normal(size=(8, 64)).astype(np.float32))
  upstream = tf.constant(rng.normal(size=(8, 300)).astype(np.float32))
  ours = heads.DenseClassifier(300, name="att_fc", dtype="float32")
  plain = keras.layers.Dense(300, name="att_fc", dtype="float32")
  ours.build((None, 64))
  plain.build((None, 64))
  plain.set_weights([w + 0.1 * rng.normal(size=w.shape) for w in ours.get_weights()])
  ours.set_weights(plain.get_weights())
  assert [w.path for w in ours.weights] == [w.path for w in plain.weights]
  assert ours.get_config() == plain.get_config()
  results = []
  for layer in (ours, plain):
    with tf.GradientTape() as tape:
      tape.watch(x)
      logits = layer(x)
      loss = tf.reduce_sum(logits * upstream)
    results.append([logits, *tape.gradient(loss, [x, layer.kernel, layer.bias])])
  (ours_logits, ours_dx, ours_dk, ours_db), (logits, dx, dk, db) = results
  np.testing.assert_array_equal(ours_logits.numpy(), logits.numpy())
  np.testing.assert_allclose(ours_dx.numpy(), dx.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ours_dk.numpy(), dk.numpy())
  np.testing.assert_allclose(ours_db.numpy(), db.numpy(), rtol=1e-6)
  # ||x^T g||^2 from the [B, B] Gram matrices; the oracle in float64.
  expected = np.sum((x.numpy().astype(np.float64).T @ upstream.numpy()) ** 2)
  gram = float(heads.dense_kernel_gradient_square_norm(x, upstream))
  assert gram == pytest.approx(expected, rel=1e-5)
  norm = optimizer_lib.global_norm_with_dense_kernels([dk, db], [(x, upstream), None])
  assert float(norm) == pytest.approx(float(tf.linalg.global_norm([dk, db])), rel=1e-6)


def _normalised_weights_cosine(prelogits, weights):
  """The cosine head as it was: a normalised copy of the weights, then the product."""
  return tf.matmul(tf.nn.l2_normalize(prelogits, axis=1), tf.nn.l2_normalize(weights, axis=0))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
  data = tmp_path_factory.mktemp("fused_data")
  mf.write_tiny_tfrecords(data, metadata_num_classes=4)
  return data


def _losses(data, logdir, delg: bool, fused: bool, initial_lr: float) -> np.ndarray:
  config = tiny_config(
    data,
    logdir,
    max_iters=20,
    report_interval=1,
    save_interval=1000,
    eval_interval=1000,
    num_classes=300,  # wider heads than the data needs; labels stay in 0..3
    delg_global_features=delg,
    initial_lr=initial_lr,
    fused_updates=fused,
  )
  tf.keras.utils.set_random_seed(7)
  history = train(config).history
  assert [record["step"] for record in history] == list(range(1, 21))
  return np.array(
    [
      [r["loss/desc/crossentropy"], r["loss/attn/crossentropy"], r["loss/recon/mse"]]
      for r in history
    ]
  )


@pytest.mark.parametrize("delg", [False, True])
def test_first_20_steps_bit_identical_to_keras_sgd(tmp_path, tiny_data, delg):
  """Fused update + folded clipping vs Keras SGD + tf.clip_by_global_norm: same losses, bit for bit."""
  fused = _losses(tiny_data, tmp_path / "fused", delg, True, 0.01)
  keras_sgd = _losses(tiny_data, tmp_path / "keras", delg, False, 0.01)
  np.testing.assert_array_equal(fused, keras_sgd)
  assert np.all(np.isfinite(fused)) and fused[-1, 0] < fused[0, 0]  # it really trained


def test_first_20_steps_of_the_cosine_head_as_before(tmp_path, tiny_data, monkeypatch):
  """The cosine head without a normalised weight copy vs the previous formulation.

  Same mathematics, other rounding: the losses agree to ~1e-6 for the first steps and the
  tiny differences then grow slowly along the trajectory (small-batch training with ArcFace's
  scale 45 amplifies them: at lr 0.01 they reach 1e-4 after three steps, so the comparison
  runs at lr 0.001, where 20 steps stay within 5e-4).
  """
  from delf.model import heads

  today = _losses(tiny_data, tmp_path / "today", True, True, 0.001)
  monkeypatch.setattr(heads, "cosine_logits", _normalised_weights_cosine)
  before = _losses(tiny_data, tmp_path / "before", True, True, 0.001)
  np.testing.assert_allclose(today[:10], before[:10], rtol=2e-5)
  np.testing.assert_allclose(today, before, rtol=5e-4)


@pytest.mark.parametrize("delg", [False, True])
def test_first_20_steps_of_the_dense_heads_as_before(tmp_path, tiny_data, monkeypatch, delg):
  """Large dense heads (untransposed input gradient, Gram-form clipping norm) vs Keras's
  Dense and ``tf.linalg.global_norm``: same mathematics, other rounding."""
  monkeypatch.setattr(heads, "LARGE_HEAD_ELEMENTS", 0)  # the 81,313-class path, at 300
  calls = []
  dense_heads = loop._Trainer._dense_heads
  monkeypatch.setattr(
    loop._Trainer, "_dense_heads", lambda *a: calls.append(dense_heads(*a)) or calls[-1]
  )
  today = _losses(tiny_data, tmp_path / "today", delg, True, 0.01)
  assert len(calls[-1]) == (1 if delg else 2)  # attention (+ DELF's descriptor) head
  monkeypatch.setattr(heads, "LARGE_HEAD_ELEMENTS", 1 << 62)  # the plain formulation
  before = _losses(tiny_data, tmp_path / "before", delg, True, 0.01)
  assert calls[-1] == []
  np.testing.assert_allclose(today[:10], before[:10], rtol=1e-5)
  np.testing.assert_allclose(today, before, rtol=1e-4)
