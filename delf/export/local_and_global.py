"""Local features and global descriptors from one pass per scale (training.md §7.5).

The model runs at every pyramid scale once and returns the global descriptor
together with the attention and feature maps; local selection and NMS are as
in `local_features`, and the global rows are kept only for the scales listed
in ``global_scales_ind`` (increasing scale-index order; none gives ``[0, D]``).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from delf.export import pyramid
from delf.export.local_features import (
  Candidates,
  assert_scales_not_empty,
  candidate_shape_invariants,
  concat_candidates,
  select_cells,
  suppress,
)
from delf.export.receptive_field import BASE_STRIDE


def ExtractLocalAndGlobalFeatures(
  image,
  image_scales,
  max_feature_num,
  abs_thres,
  global_scales_ind,
  iou: float,
  model_fn: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]],
  stride_factor: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """Extracts local features and per-scale global descriptors of a uint8 image.

  Args:
    image: uint8 ``[H, W, 3]`` RGB image.
    image_scales: float32 ``[S]`` pyramid scales.
    max_feature_num: int32 scalar; at most this many local features.
    abs_thres: float32 scalar attention threshold.
    global_scales_ind: int32 ``[K]`` indices of the scales whose global descriptor is kept.
    iou: NMS IoU threshold fixed at export (1.0 = no suppression).
    model_fn: maps a normalised ``[1, h, w, 3]`` image to
      ``(global [1, Dg], attention_prob [1, h', w', 1], features [1, h', w', D])``.
    stride_factor: 2.0 when block3 is sub-sampled (``block3_strides``), else 1.0.

  Returns:
    ``boxes [N, 4]``, ``features [N, D]``, ``scales [N]``, ``scores [N, 1]`` sorted by
    descending score, and ``global_descriptors [S', Dg]`` (all float32).
  """
  stride = BASE_STRIDE * stride_factor
  image_scales = tf.convert_to_tensor(image_scales, tf.float32)
  abs_thres = tf.convert_to_tensor(abs_thres, tf.float32)
  wanted = tf.reshape(tf.cast(global_scales_ind, tf.int32), [-1])
  image_batch, original_size = pyramid.prepare_image(image)

  def _process_scale(scale_index: tf.Tensor) -> tuple[Candidates, tf.Tensor]:
    scale = tf.gather(image_scales, scale_index)
    resized = pyramid.resize_to_scale(image_batch, original_size, scale)
    global_descriptor, attention_prob, feature_map = model_fn(resized)
    global_descriptor = tf.reshape(global_descriptor, [1, -1])
    # Zero or one row, depending on whether this scale is selected.
    keep_global = tf.reduce_any(tf.equal(wanted, scale_index))
    global_rows = global_descriptor[: tf.cast(keep_global, tf.int32)]
    return select_cells(attention_prob, feature_map, scale, abs_thres, stride), global_rows

  with tf.control_dependencies([assert_scales_not_empty(image_scales)]):
    num_scales = tf.shape(image_scales)[0]
  # The first scale runs outside the loop: it fixes the static descriptor depths.
  first, first_global = _process_scale(tf.constant(0, tf.int32))

  def _body(scale_index, global_descriptors, *accumulated):
    candidates, global_rows = _process_scale(scale_index)
    merged = concat_candidates(Candidates(*accumulated), candidates)
    return (scale_index + 1, tf.concat([global_descriptors, global_rows], 0), *merged)

  _, global_descriptors, *accumulated = tf.while_loop(
    cond=lambda scale_index, *_: scale_index < num_scales,
    body=_body,
    loop_vars=(tf.constant(1, tf.int32), first_global, *first),
    shape_invariants=(
      tf.TensorShape([]),
      tf.TensorShape([None, first_global.shape[-1]]),
      *candidate_shape_invariants(first),
    ),
  )
  candidates = Candidates(*(tf.stop_gradient(t) for t in accumulated))
  boxes, features, scales, scores = suppress(candidates, max_feature_num, iou)
  return boxes, features, scales, scores, tf.stop_gradient(global_descriptors)
