"""Local (and global) features of several same-size images per model call (``extract_batch``).

Each pyramid level of the whole batch goes through the model at once; the cell
selection and the NMS stay per image and give what the one-image signature gives
for that image: its candidates are taken in the same order (scale order, then
row-major) and reduced by the same `delf.export.local_features.suppress`. The
outputs are flat, image after image, with ``num_features [N]`` saying how many rows
belong to each image.
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
  suppress,
)
from delf.export.receptive_field import (
  BASE_STRIDE,
  PADDING,
  RECEPTIVE_FIELD,
  CalculateReceptiveBoxes,
)


def prepare_images(images) -> tuple[tf.Tensor, tf.Tensor]:
  """Normalised float32 ``[N, H, W, 3]`` batch and its float32 ``(H, W)``."""
  images = tf.convert_to_tensor(images)
  size = tf.cast(tf.shape(images)[1:3], tf.float32)
  return pyramid.NormalizeImages(images, 128.0, 128.0), size


def _select_batch(
  attention_prob, feature_map, scale, abs_thres, stride
) -> tuple[Candidates, tf.Tensor]:
  """`select_cells` for every image of the batch; also returns each candidate's image index."""
  shape = tf.shape(feature_map)
  height, width = shape[1], shape[2]
  depth = feature_map.shape[-1] if feature_map.shape[-1] is not None else shape[3]
  boxes = CalculateReceptiveBoxes(height, width, RECEPTIVE_FIELD, stride, PADDING) / scale
  attention = tf.reshape(attention_prob, [-1])
  features = tf.reshape(feature_map, [-1, depth])
  indices = tf.reshape(tf.where(attention >= abs_thres), [-1])
  cells = height * width
  scores = tf.gather(attention, indices)
  candidates = Candidates(
    boxes=tf.gather(boxes, tf.math.floormod(indices, tf.cast(cells, tf.int64))),
    features=tf.gather(features, indices),
    scales=tf.ones_like(scores) / scale,
    scores=scores,
  )
  return candidates, tf.cast(indices // tf.cast(cells, tf.int64), tf.int32)


def ExtractLocalFeaturesBatch(
  images,
  image_scales,
  max_feature_num,
  abs_thres,
  iou: float,
  model_fn: Callable,
  stride_factor: float,
  global_scales_ind=None,
):
  """Batched `ExtractLocalFeatures` (and the global rows of `ExtractLocalAndGlobalFeatures`).

  Args:
    images: uint8 ``[N, H, W, 3]``.
    model_fn: maps a normalised ``[N, h, w, 3]`` batch to ``(attention_prob, features)``,
      or to ``(global [N, Dg], attention_prob, features)`` when ``global_scales_ind`` is
      given.
    Other arguments: as for the one-image functions.

  Returns:
    ``boxes [T, 4]``, ``features [T, D]``, ``scales [T]``, ``scores [T, 1]``,
    ``num_features [N]`` (int32; rows of image i follow those of image i - 1), and with
    ``global_scales_ind`` also ``global_descriptors [N, S', Dg]``.
  """
  with_global = global_scales_ind is not None
  stride = BASE_STRIDE * stride_factor
  image_scales = tf.convert_to_tensor(image_scales, tf.float32)
  abs_thres = tf.convert_to_tensor(abs_thres, tf.float32)
  batch, size = prepare_images(images)
  num_images = tf.shape(batch)[0]
  if with_global:
    wanted = tf.reshape(tf.cast(global_scales_ind, tf.int32), [-1])

  def _process_scale(scale_index):
    scale = tf.gather(image_scales, scale_index)
    resized = pyramid.resize_to_scale(batch, size, scale)
    outputs = model_fn(resized)
    if with_global:
      global_descriptor, attention_prob, feature_map = outputs
      keep = tf.reduce_any(tf.equal(wanted, scale_index))
      global_rows = tf.reshape(global_descriptor, [num_images, 1, -1])[:, : tf.cast(keep, tf.int32)]
    else:
      attention_prob, feature_map = outputs
      global_rows = tf.zeros([num_images, 0, 0])
    candidates, owners = _select_batch(attention_prob, feature_map, scale, abs_thres, stride)
    return candidates, owners, global_rows

  with tf.control_dependencies([assert_scales_not_empty(image_scales)]):
    num_scales = tf.shape(image_scales)[0]
  first, first_owners, first_global = _process_scale(tf.constant(0, tf.int32))

  def _body(scale_index, owners, global_rows, *accumulated):
    candidates, new_owners, new_global = _process_scale(scale_index)
    merged = concat_candidates(Candidates(*accumulated), candidates)
    return (
      scale_index + 1,
      tf.concat([owners, new_owners], 0),
      tf.concat([global_rows, new_global], 1),
      *merged,
    )

  _, owners, global_rows, *accumulated = tf.while_loop(
    cond=lambda scale_index, *_: scale_index < num_scales,
    body=_body,
    loop_vars=(tf.constant(1, tf.int32), first_owners, first_global, *first),
    shape_invariants=(
      tf.TensorShape([]),
      tf.TensorShape([None]),
      tf.TensorShape([None, None, first_global.shape[-1]]),
      *candidate_shape_invariants(first),
    ),
  )
  candidates = Candidates(*(tf.stop_gradient(t) for t in accumulated))

  depth = candidates.features.shape[-1]
  outputs = (
    tf.TensorArray(tf.float32, size=num_images, infer_shape=False, element_shape=[None, 4]),
    tf.TensorArray(tf.float32, size=num_images, infer_shape=False, element_shape=[None, depth]),
    tf.TensorArray(tf.float32, size=num_images, infer_shape=False, element_shape=[None]),
    tf.TensorArray(tf.float32, size=num_images, infer_shape=False, element_shape=[None, 1]),
  )
  counts = tf.TensorArray(tf.int32, size=num_images)

  def _per_image(i, counts, *arrays):
    mine = tf.reshape(tf.where(tf.equal(owners, i)), [-1])
    selected = suppress(Candidates(*(tf.gather(t, mine) for t in candidates)), max_feature_num, iou)
    arrays = tuple(array.write(i, value) for array, value in zip(arrays, selected))
    return (i + 1, counts.write(i, tf.shape(selected[3])[0]), *arrays)

  _, counts, *arrays = tf.while_loop(
    cond=lambda i, *_: i < num_images,
    body=_per_image,
    loop_vars=(tf.constant(0, tf.int32), counts, *outputs),
  )
  boxes, features, scales, scores = (array.concat() for array in arrays)
  result = (
    tf.reshape(boxes, [-1, 4]),
    tf.reshape(features, [-1, depth]),
    tf.reshape(scales, [-1]),
    tf.reshape(scores, [-1, 1]),
    counts.stack(),
  )
  if with_global:
    result += (tf.stop_gradient(global_rows),)
  return result
