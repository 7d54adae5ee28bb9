"""Momentum SGD with one fused kernel per variable, and a cheaper gradient clipping.

At GLDv2's 81,313 classes the two classifier heads hold ~250 M weights, and each
step reads and writes their weights, gradients and momenta: memory traffic, not
arithmetic, sets the step time there. Keras's SGD updates a variable with five
separate element-wise passes (``m * momentum``, ``g * lr``, the difference, the
momentum assignment, ``var += m``); TensorFlow's ``ResourceApplyKerasMomentum``
kernel computes the same formula, ``m = m * momentum - g * lr; var += m``, in one
pass. The optimizer's variables and checkpoint layout are Keras's SGD's, so
checkpoints move freely between the two.

`clip_by_global_norm` has ``tf.clip_by_global_norm``'s semantics; with one replica
the clipping factor is folded into the learning rate of the fused update instead of
rescaling every gradient (one pass over all gradients less; equal up to float32
rounding of ``g * (lr * s)`` against ``(g * s) * lr``). `global_norm_with_dense_kernels`
gives the norm that clipping needs without reading the dense heads' kernel gradients.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from delf.model.heads import dense_kernel_gradient_square_norm


class FusedMomentumSGD(keras.optimizers.SGD):
  """``keras.optimizers.SGD`` (momentum, not Nesterov) with fused dense float32 updates.

  ``gradient_scale`` (a scalar variable, 1 unless `set_gradient_scale` says otherwise)
  multiplies every gradient inside the fused update (the clipping factor). Anything
  the fused kernel does not cover (sparse gradients, other dtypes, Nesterov, no
  momentum) takes Keras's own ``update_step``.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._gradient_scale = None

  def build(self, variables):
    super().build(variables)
    if self._gradient_scale is None:
      # Not tracked by checkpoints (a plain tf.Variable outside the Keras optimizer state).
      with tf.init_scope():
        self._gradient_scale = tf.Variable(1.0, trainable=False, dtype=tf.float32)

  def set_gradient_scale(self, scale: tf.Tensor) -> None:
    """Sets the factor of every gradient of the next `apply_gradients` (graph-safe)."""
    self._gradient_scale.assign(tf.cast(scale, tf.float32))

  def update_step(self, gradient, variable, learning_rate):
    fusable = (
      self.momentum != 0
      and not self.nesterov
      and isinstance(gradient, tf.Tensor)
      and variable.dtype == tf.float32
      and gradient.dtype == tf.float32
    )
    if not fusable:
      if self._gradient_scale is not None:
        gradient = gradient * tf.cast(self._gradient_scale, gradient.dtype)
      return super().update_step(gradient, variable, learning_rate)
    momentum = self.momentums[self._get_variable_index(variable)]
    lr = tf.cast(learning_rate, tf.float32) * self._gradient_scale
    tf.raw_ops.ResourceApplyKerasMomentum(
      var=_handle(variable),
      accum=_handle(momentum),
      lr=lr,
      grad=gradient,
      momentum=tf.constant(self.momentum, tf.float32),
      use_locking=False,
      use_nesterov=False,
    )


def _handle(variable) -> tf.Tensor:
  """The resource handle of a Keras or TensorFlow variable (per device when mirrored)."""
  if isinstance(variable, keras.Variable):
    variable = variable.value
  return variable.handle


def global_norm(gradients: list[tf.Tensor]) -> tf.Tensor:
  """``tf.linalg.global_norm`` (the same reduction order as ``tf.clip_by_global_norm``)."""
  return tf.linalg.global_norm(gradients)


def global_norm_with_dense_kernels(
  gradients: list[tf.Tensor], dense_kernels: list[tuple[tf.Tensor, tf.Tensor] | None]
) -> tf.Tensor:
  """The global norm of ``gradients``, where ``dense_kernels[i] = (x, logits_gradient)``
  gives gradient ``i`` (a dense kernel's ``x^T @ logits_gradient``) by its Gram form.

  Equal to ``tf.linalg.global_norm`` up to float32 rounding (another summation order),
  without reading the 0.3-0.7 GB kernel gradients of 81,313-class heads.
  """
  terms = []
  for gradient, dense in zip(gradients, dense_kernels):
    if dense is None:
      terms.append(2.0 * tf.nn.l2_loss(tf.cast(gradient, tf.float32)))
    else:
      terms.append(dense_kernel_gradient_square_norm(*dense))
  return tf.sqrt(tf.add_n(terms))


def clip_by_global_norm(
  gradients: list[tf.Tensor],
  clip_norm: float,
  fold_into: FusedMomentumSGD | None = None,
  norm: tf.Tensor | None = None,
) -> tuple[list[tf.Tensor], tf.Tensor]:
  """``tf.clip_by_global_norm``; with ``fold_into`` the factor goes to the optimizer.

  Without ``fold_into`` the result is exactly ``tf.clip_by_global_norm``'s. With it,
  the gradients come back unscaled and the factor ``clip_norm / max(norm, clip_norm)``
  (computed as TensorFlow does) is handed to ``fold_into.set_gradient_scale``, so the
  next ``apply_gradients`` applies it inside the fused update. ``norm``, when given, is
  the gradients' global norm computed elsewhere (`global_norm_with_dense_kernels`).
  """
  if fold_into is None:
    return tf.clip_by_global_norm(gradients, clip_norm, use_norm=norm)
  if norm is None:
    norm = global_norm(gradients)
  clip = tf.constant(clip_norm, tf.float32)
  # As tf.clip_by_global_norm: an infinite norm gives a NaN factor (and NaN weights).
  scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)
  fold_into.set_gradient_scale(scale)
  return list(gradients), norm
