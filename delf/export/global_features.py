"""Multi-scale global descriptors inside the exported graph (training.md §7.4).

The model runs once per selected pyramid scale, in increasing scale-index
order whatever the order of ``global_scales_ind`` (indices outside
``[0, S)`` and repeats select nothing extra), giving ``[S', D]``. Optional
pooling over scales (``'average'`` / ``'sum'`` → ``[D]``) and L2 normalisation
(per row without pooling, of the pooled vector otherwise) serve the Kaggle
format.

Ours (KB-32): no selected scale gives an empty ``[0, D]`` (pooled: a zero
vector ``[D]``) instead of the reference's gather error.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from delf.export import pyramid

POOL_TYPES = ("None", "average", "sum")
"""Values of ``multi_scale_pool_type``; the string ``'None'`` keeps one row per scale."""


def validate_pool_type(multi_scale_pool_type: str) -> str:
  """Returns the pool type or raises ValueError naming the allowed values."""
  if multi_scale_pool_type not in POOL_TYPES:
    raise ValueError(
      f"multi_scale_pool_type must be one of {', '.join(POOL_TYPES)}, got {multi_scale_pool_type!r}"
    )
  return multi_scale_pool_type


def selected_scale_indices(num_scales: tf.Tensor, global_scales_ind) -> tf.Tensor:
  """Returns the int32 indices in ``[0, num_scales)`` present in ``global_scales_ind``, sorted."""
  all_indices = tf.range(num_scales, dtype=tf.int32)
  wanted = tf.reshape(tf.cast(global_scales_ind, tf.int32), [1, -1])
  present = tf.reduce_any(tf.equal(all_indices[:, tf.newaxis], wanted), axis=1)
  return tf.boolean_mask(all_indices, present)


def pool_and_normalize(
  descriptors: tf.Tensor, multi_scale_pool_type: str, normalize_global_descriptor: bool
) -> tf.Tensor:
  """Pools ``[S', D]`` per-scale rows as the export flags say.

  An empty ``[0, D]`` input pools to a zero vector (KB-32); L2 normalisation
  keeps it zero.
  """
  validate_pool_type(multi_scale_pool_type)
  if multi_scale_pool_type == "None":
    if normalize_global_descriptor:
      return tf.nn.l2_normalize(descriptors, axis=1)
    return descriptors
  count = tf.shape(descriptors)[0]
  if multi_scale_pool_type == "average":
    pooled = tf.cond(
      count > 0,
      lambda: tf.reduce_mean(descriptors, axis=0),
      # The sum over no rows is the zero vector with the right shape.
      lambda: tf.reduce_sum(descriptors, axis=0),
    )
  else:
    pooled = tf.reduce_sum(descriptors, axis=0)
  if normalize_global_descriptor:
    pooled = tf.nn.l2_normalize(pooled, axis=0)
  return pooled


def ExtractGlobalFeatures(
  image,
  image_scales,
  global_scales_ind,
  model_fn: Callable[[tf.Tensor], tf.Tensor],
  multi_scale_pool_type: str = "None",
  normalize_global_descriptor: bool = False,
  normalization_function=pyramid.NormalizeImages,
  *,
  descriptor_dim: int,
) -> tf.Tensor:
  """Extracts global descriptors of a uint8 ``[H, W, 3]`` image at the selected scales.

  Args:
    image: uint8 ``[H, W, 3]`` RGB image.
    image_scales: float32 ``[S]`` pyramid scales.
    global_scales_ind: int32 ``[K]`` indices into ``image_scales`` to run.
    model_fn: maps a normalised ``[1, h, w, 3]`` image to a ``[1, D]`` descriptor.
    multi_scale_pool_type: ``'None'`` (``[S', D]``), ``'average'`` or ``'sum'`` (``[D]``).
    normalize_global_descriptor: L2-normalise the rows (``'None'``) or the pooled vector.
    normalization_function: pixel normalisation ``f(image, pixel_value_offset,
      pixel_value_scale)``.
    descriptor_dim: ``D``; gives the empty result its shape when no scale is selected.

  Returns:
    float32 ``[S', D]`` or ``[D]``.
  """
  validate_pool_type(multi_scale_pool_type)
  image_scales = tf.convert_to_tensor(image_scales, tf.float32)
  image_batch, original_size = pyramid.prepare_image(image, normalization_function)
  selected = selected_scale_indices(tf.shape(image_scales)[0], global_scales_ind)

  def _body(position, descriptors):
    scale = tf.gather(image_scales, tf.gather(selected, position))
    resized = pyramid.resize_to_scale(image_batch, original_size, scale)
    descriptor = tf.reshape(model_fn(resized), [1, descriptor_dim])
    return position + 1, tf.concat([descriptors, descriptor], axis=0)

  _, descriptors = tf.while_loop(
    cond=lambda position, _: position < tf.size(selected),
    body=_body,
    loop_vars=(tf.constant(0, tf.int32), tf.zeros([0, descriptor_dim], tf.float32)),
    shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, descriptor_dim])),
  )
  return pool_and_normalize(
    tf.stop_gradient(descriptors), multi_scale_pool_type, normalize_global_descriptor
  )
