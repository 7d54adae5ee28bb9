"""Receptive boxes of block3 feature cells (training.md §7.2, inference.md §2.6).

The numbers are KEPT from the reference (KB-28): keypoint locations in
``.delf`` files, and therefore every matching threshold tuned on them, depend
on them. 291 is the receptive field of the conv4_x output of a caffe-style
ResNet-50 and 145 = (291 - 1) / 2, so a box centre is exactly
``stride * (row, col)``.
"""

from __future__ import annotations

import tensorflow as tf

RECEPTIVE_FIELD = 291
"""Receptive field (pixels) of one block3 cell."""
BASE_STRIDE = 16
"""Stride of block3 without ``block3_strides``; the exports multiply it by the stride factor."""
PADDING = 145
"""Offset of a cell's box from its stride-grid position."""


def stride_factor(block3_strides: bool) -> float:
  """Block3 sits at stride 32 when the model sub-samples it (``block3_strides``), else 16."""
  return 2.0 if block3_strides else 1.0


def CalculateReceptiveBoxes(height, width, rf, stride, padding) -> tf.Tensor:
  """Returns one ``[ymin, xmin, ymax, xmax]`` box per cell of a ``height x width`` map.

  Rows are in row-major cell order (index ``y * width + x``), the order in
  which feature maps are flattened, so box ``k`` belongs to feature row ``k``.

  Args:
    height: feature-map height (int or scalar tensor).
    width: feature-map width (int or scalar tensor).
    rf: receptive field in pixels.
    stride: distance in pixels between neighbouring cells.
    padding: offset of a cell's box from ``stride * (y, x)``.

  Returns:
    float32 tensor ``[height * width, 4]``.
  """
  y, x = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
  coordinates = tf.reshape(tf.stack([y, x], axis=2), [-1, 2])
  point_boxes = tf.cast(tf.concat([coordinates, coordinates], axis=1), tf.float32)
  bias = tf.constant([-padding, -padding, -padding + rf - 1, -padding + rf - 1], tf.float32)
  return tf.cast(stride, tf.float32) * point_boxes + bias


def CalculateKeypointCenters(boxes) -> tf.Tensor:
  """Returns the ``(y, x)`` centres ``[N, 2]`` of ``[N, 4]`` boxes (the keypoint locations)."""
  boxes = tf.convert_to_tensor(boxes)
  return (boxes[:, :2] + boxes[:, 2:]) / 2.0
