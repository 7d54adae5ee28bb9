"""Classifier heads: the DELG cosine classifier with an ArcFace margin (training.md §5.8),
and the plain dense classifiers (DELF's descriptor head, both models' attention head).

``cosine_logits`` and ``arcface_margin`` are pure functions so that tests can
check them against closed forms (margin 0 gives the scaled cosine, the margin
touches only the true class).

At GLDv2's 81,313 classes a head's ``[D, C]`` kernel is 0.3-0.7 GB, and a training step
is bound by how often it and its gradient are read and written. Two savings, both the
same mathematics: the input gradient ``g @ kernel^T`` is computed as
``(kernel @ g^T)^T`` (TensorFlow's CPU matmul with a transposed large operand is ~2x
slower), and the squared norm of the kernel gradient ``x^T @ g``, needed for the
gradient clipping, comes from two ``[B, B]`` Gram matrices instead of a pass over the
``[D, C]`` gradient (`dense_kernel_gradient_square_norm`). Both apply to heads of at
least `LARGE_HEAD_ELEMENTS` weights (2048 x 8192): below that they save nothing
measurable, and small heads (the demo's 8 classes, the tests) keep the plain
formulation's float32 rounding, so their results stay bit-identical to earlier releases.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

# Kernels of at least this many weights take `dense_logits` and the Gram-form norm.
LARGE_HEAD_ELEMENTS = 1 << 24

# Clamp before acos (KB-15): acos'(x) = -1/sqrt(1-x^2) is infinite at |x| = 1.
COSINE_CLAMP_EPS = 1e-7


def cosine_logits(prelogits: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """Cosine similarity of every row of ``prelogits [B, D]`` with every column of ``weights [D, C]``.

  ``l2_normalize(prelogits) @ l2_normalize(weights, axis=0)``, computed as
  ``(l2_normalize(prelogits) @ weights) / ||weights[:, c]||``: the normalised copy of
  the ``[D, C]`` weights (1 GB at GLDv2's 81,313 classes) is never written, in the
  forward pass nor in the gradient (`_scaled_columns_matmul`).
  """
  normalized = tf.nn.l2_normalize(prelogits, axis=1)
  # Read a variable here, outside the custom gradient, which then sees a plain tensor.
  return _scaled_columns_matmul(normalized, tf.convert_to_tensor(weights))


@tf.custom_gradient
def _scaled_columns_matmul(x: tf.Tensor, weights: tf.Tensor):
  """``x @ weights * inv[c]`` with ``inv = rsqrt(max(sum_d w_dc^2, 1e-12))`` (l2_normalize's).

  Gradient, with ``g`` the upstream gradient and ``y = x @ weights``:
  ``dx = (g * inv) @ weights^T`` and
  ``dweights = x^T @ (g * inv) - weights * (inv^3 * sum_b g * y)[c]`` (the second term
  only where the clamp is inactive), i.e. the gradient of ``x @ l2_normalize(weights)``.
  """
  square_sum = tf.reduce_sum(tf.square(weights), axis=0)
  inv = tf.math.rsqrt(tf.maximum(square_sum, 1e-12))
  products = tf.matmul(x, weights)

  def grad(upstream):
    scaled = upstream * inv
    grad_x = tf.matmul(scaled, weights, transpose_b=True)
    active = tf.cast(square_sum > 1e-12, inv.dtype)
    column_factor = active * inv * inv * tf.reduce_sum(scaled * products, axis=0)
    grad_weights = tf.matmul(x, scaled, transpose_a=True) - weights * column_factor
    return grad_x, grad_weights

  return products * inv, grad


@tf.custom_gradient
def dense_logits(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor):
  """``x @ kernel + bias``; its input gradient avoids a matmul with a transposed kernel."""

  def grad(upstream):
    grad_x = tf.transpose(tf.matmul(kernel, upstream, transpose_b=True))
    grad_kernel = tf.matmul(x, upstream, transpose_a=True)
    return grad_x, grad_kernel, tf.reduce_sum(upstream, axis=0)

  return tf.matmul(x, kernel) + bias, grad


def dense_kernel_gradient_square_norm(x: tf.Tensor, upstream: tf.Tensor) -> tf.Tensor:
  """``||x^T @ upstream||_F^2`` as ``sum((x x^T) * (upstream upstream^T))``.

  ``x [B, D]`` is the head's input and ``upstream [B, C]`` the gradient of its logits:
  two ``[B, B]`` products instead of reading the ``[D, C]`` kernel gradient again.
  """
  x_gram = tf.matmul(x, x, transpose_b=True)
  upstream_gram = tf.matmul(upstream, upstream, transpose_b=True)
  return tf.reduce_sum(x_gram * upstream_gram)


class DenseClassifier(keras.layers.Dense):
  """``keras.layers.Dense`` (same variables, names and config) computed by `dense_logits`.

  Only a large (`is_large`), float32, linear, biased head takes `dense_logits`; anything
  else (e.g. a mixed-precision compute dtype) is Keras's own ``Dense.call``.
  """

  @property
  def is_large(self) -> bool:
    """Whether the kernel has at least `LARGE_HEAD_ELEMENTS` weights (read at trace time)."""
    return math.prod(self.kernel.shape) >= LARGE_HEAD_ELEMENTS

  def call(self, inputs, training=None):
    if (
      self.is_large
      and self.compute_dtype == "float32"
      and self.kernel.dtype == "float32"
      and self.bias is not None
      and self.activation is keras.activations.linear
      and not getattr(self, "lora_enabled", False)
    ):
      # Read the variables here, outside the custom gradient, which then sees tensors.
      return dense_logits(
        tf.convert_to_tensor(inputs),
        tf.convert_to_tensor(self.kernel),
        tf.convert_to_tensor(self.bias),
      )
    return super().call(inputs, training=training)


def arcface_margin(
  cosine: tf.Tensor, labels: tf.Tensor, margin: float, scale: tf.Tensor | float
) -> tf.Tensor:
  """ArcFace logits: ``s * cos(theta + m)`` for the true class where ``theta <= pi - m``.

  Every other entry stays ``s * cos``. ``cos`` is clamped to
  ``[-1 + 1e-7, 1 - 1e-7]`` before ``acos`` so that neither the value nor the
  gradient can be NaN or infinite, even when rounding pushes ``|cos| >= 1``.

  Args:
    cosine: ``[B, C]`` cosine similarities.
    labels: ``[B]`` integer class ids in ``[0, C)``.
    margin: additive angular margin m (radians).
    scale: the scale s.
  """
  cosine = tf.convert_to_tensor(cosine)
  num_classes = tf.shape(cosine)[1]
  one_hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, on_value=True, off_value=False)
  clamped = tf.clip_by_value(cosine, -1.0 + COSINE_CLAMP_EPS, 1.0 - COSINE_CLAMP_EPS)
  theta = tf.acos(clamped)
  apply = tf.logical_and(one_hot, theta <= math.pi - margin)
  with_margin = tf.where(apply, tf.cos(theta + margin), cosine)
  return tf.cast(scale, cosine.dtype) * with_margin


class CosineClassifier(keras.layers.Layer):
  """Cosine classifier with ArcFace margin, ``call(prelogits, labels=None, training=False)``.

  Variables: ``cosine_weights [D, C]`` (Glorot uniform, trainable) and
  ``scale_factor`` (NOT trainable, so permanently ``scale_factor_init``; KEEP).
  The margin is applied only when ``training`` and labels are given; logits
  are float32 even under a mixed-precision policy.

  Args:
    num_classes: C.
    scale_factor_init: s (45.25 ~ sqrt(2048)).
    arcface_margin: m in radians (0.1).
  """

  def __init__(
    self,
    num_classes: int,
    scale_factor_init: float = 45.25,
    arcface_margin: float = 0.1,
    **kwargs,
  ):
    kwargs.setdefault("name", "desc_fc")
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.num_classes = int(num_classes)
    self.scale_factor_init = float(scale_factor_init)
    self.arcface_margin = float(arcface_margin)

  def build(self, input_shape):
    self.cosine_weights = self.add_weight(
      name="cosine_weights",
      shape=(int(input_shape[-1]), self.num_classes),
      initializer="glorot_uniform",
      trainable=True,
    )
    self.scale_factor = self.add_weight(
      name="scale_factor",
      shape=(),
      initializer=keras.initializers.Constant(self.scale_factor_init),
      trainable=False,
    )

  def call(self, prelogits, labels=None, training=False):
    cosine = cosine_logits(prelogits, self.cosine_weights)
    if training and labels is not None and self.arcface_margin > 0:
      return arcface_margin(cosine, labels, self.arcface_margin, self.scale_factor)
    return self.scale_factor * cosine

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_classes)

  def get_config(self) -> dict:
    return {
      **super().get_config(),
      "num_classes": self.num_classes,
      "scale_factor_init": self.scale_factor_init,
      "arcface_margin": self.arcface_margin,
    }
