"""Multi-scale local feature extraction inside the exported graph (training.md §7.3).

For each pyramid scale the model gives an attention map and a feature map;
cells whose attention is at least ``abs_thres`` become candidates with their
receptive box (divided by the scale, i.e. in input-image pixels), descriptor,
feature scale ``1 / s`` and score. Candidates of all scales are concatenated in
scale order and reduced by NMS to at most ``max_feature_num``, best first.

Ours (KB-29): the descriptor depth comes from the feature map (128 with the
autoencoder, 1024 without); the reference hard-coded 1024 and failed on the
autoencoder models its own script exported by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from delf.export import nms, pyramid
from delf.export.receptive_field import (
  BASE_STRIDE,
  PADDING,
  RECEPTIVE_FIELD,
  CalculateReceptiveBoxes,
)


class Candidates(NamedTuple):
  """Selected cells of one or more scales: boxes [N,4], features [N,D], scales [N], scores [N]."""

  boxes: tf.Tensor
  features: tf.Tensor
  scales: tf.Tensor
  scores: tf.Tensor


def select_cells(
  attention_prob: tf.Tensor,
  feature_map: tf.Tensor,
  scale: tf.Tensor,
  abs_thres: tf.Tensor,
  stride: float,
) -> Candidates:
  """Keeps the cells of one scale whose attention is ``>= abs_thres``.

  Args:
    attention_prob: ``[1, h, w, 1]`` (or ``[1, h, w]``) attention of one pyramid level.
    feature_map: ``[1, h, w, D]`` descriptors of the same level.
    scale: float32 scalar pyramid scale; boxes are divided by it.
    abs_thres: float32 scalar threshold.
    stride: block3 stride in pixels (16 or 32).

  Returns:
    `Candidates` in row-major cell order.
  """
  feature_map = tf.squeeze(feature_map, axis=0)
  shape = tf.shape(feature_map)
  boxes = CalculateReceptiveBoxes(shape[0], shape[1], RECEPTIVE_FIELD, stride, PADDING) / scale
  attention = tf.reshape(attention_prob, [-1])
  depth = feature_map.shape[-1] if feature_map.shape[-1] is not None else shape[2]
  features = tf.reshape(feature_map, [-1, depth])
  indices = tf.reshape(tf.where(attention >= abs_thres), [-1])
  scores = tf.gather(attention, indices)
  return Candidates(
    boxes=tf.gather(boxes, indices),
    features=tf.gather(features, indices),
    scales=tf.ones_like(scores) / scale,
    scores=scores,
  )


def concat_candidates(first: Candidates, second: Candidates) -> Candidates:
  """Appends ``second`` after ``first`` (scale order)."""
  return Candidates(*(tf.concat([a, b], axis=0) for a, b in zip(first, second)))


def candidate_shape_invariants(candidates: Candidates) -> Candidates:
  """Loop invariants: any number of rows, the static descriptor depth if known."""
  return Candidates(
    boxes=tf.TensorShape([None, 4]),
    features=tf.TensorShape([None, candidates.features.shape[-1]]),
    scales=tf.TensorShape([None]),
    scores=tf.TensorShape([None]),
  )


def suppress(
  candidates: Candidates, max_feature_num, iou: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """NMS over all scales; returns ``boxes [N,4], features [N,D], scales [N], scores [N,1]``."""
  keep = nms.non_max_suppression(candidates.boxes, candidates.scores, max_feature_num, iou)
  boxes, features, scales, scores = (tf.gather(t, keep) for t in candidates)
  return boxes, features, scales, tf.expand_dims(scores, 1)


def assert_scales_not_empty(image_scales: tf.Tensor) -> tf.Tensor:
  """Fails with a readable message instead of a gather error on an empty scale list."""
  return tf.debugging.assert_positive(
    tf.size(image_scales), message="input_scales must contain at least one scale"
  )


def ExtractLocalFeatures(
  image,
  image_scales,
  max_feature_num,
  abs_thres,
  iou: float,
  attention_model_fn: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
  stride_factor: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """Extracts local features of a uint8 ``[H, W, 3]`` image over an image pyramid.

  Args:
    image: uint8 ``[H, W, 3]`` RGB image.
    image_scales: float32 ``[S]`` pyramid scales, processed in this order.
    max_feature_num: int32 scalar; at most this many features are returned.
    abs_thres: float32 scalar; cells with attention ``>= abs_thres`` are candidates.
    iou: NMS IoU threshold fixed at export (1.0 = no suppression).
    attention_model_fn: maps a normalised ``[1, h, w, 3]`` image to
      ``(attention_prob [1, h', w', 1], features [1, h', w', D])``.
    stride_factor: 2.0 when block3 is sub-sampled (``block3_strides``), else 1.0.

  Returns:
    ``boxes [N, 4]``, ``features [N, D]``, ``scales [N]``, ``scores [N, 1]`` (float32),
    sorted by descending score.
  """
  stride = BASE_STRIDE * stride_factor
  image_scales = tf.convert_to_tensor(image_scales, tf.float32)
  abs_thres = tf.convert_to_tensor(abs_thres, tf.float32)
  image_batch, original_size = pyramid.prepare_image(image)

  def _process_scale(scale_index: tf.Tensor) -> Candidates:
    scale = tf.gather(image_scales, scale_index)
    resized = pyramid.resize_to_scale(image_batch, original_size, scale)
    attention_prob, feature_map = attention_model_fn(resized)
    return select_cells(attention_prob, feature_map, scale, abs_thres, stride)

  with tf.control_dependencies([assert_scales_not_empty(image_scales)]):
    num_scales = tf.shape(image_scales)[0]
  # The first scale runs outside the loop: it fixes the static descriptor depth.
  first = _process_scale(tf.constant(0, tf.int32))

  def _body(scale_index, *accumulated):
    merged = concat_candidates(Candidates(*accumulated), _process_scale(scale_index))
    return (scale_index + 1, *merged)

  _, *accumulated = tf.while_loop(
    cond=lambda scale_index, *_: scale_index < num_scales,
    body=_body,
    loop_vars=(tf.constant(1, tf.int32), *first),
    shape_invariants=(tf.TensorShape([]), *candidate_shape_invariants(first)),
  )
  candidates = Candidates(*(tf.stop_gradient(t) for t in accumulated))
  return suppress(candidates, max_feature_num, iou)
