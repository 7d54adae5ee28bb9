"""Non-maximum suppression of local-feature candidates (training.md §7.3, KB-33).

Same semantics as the reference's Object Detection API call, without that
dependency (it broke installs repeatedly): candidates are ranked by score,
greedily suppressed when their IoU with a kept box exceeds ``iou_threshold``,
at most ``max_output_size`` survive, and survivors come out in descending
score order. ``iou_threshold = 1.0`` (the export default) suppresses nothing:
the result is the top-K by attention. Equal scores keep candidate order (scale
order, then row-major), which the reference left implementation-defined.
"""

from __future__ import annotations

import tensorflow as tf


def validate_iou_threshold(iou_threshold: float) -> float:
  """Returns the threshold as a float; the reference also rejected values outside [0, 1]."""
  value = float(iou_threshold)
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"iou must be in [0, 1], got {iou_threshold!r}")
  return value


def non_max_suppression(boxes, scores, max_output_size, iou_threshold: float) -> tf.Tensor:
  """Returns the int32 indices of the surviving candidates, best score first.

  Args:
    boxes: float32 ``[N, 4]`` boxes ``[ymin, xmin, ymax, xmax]``.
    scores: float32 ``[N]`` scores (attention).
    max_output_size: int32 scalar; at most this many survivors (negative means 0).
    iou_threshold: Python float fixed at export time; a candidate is suppressed when its
      IoU with an already kept box is strictly greater than this.

  Returns:
    int32 ``[K]`` indices into ``boxes``, ``K <= min(max_output_size, N)``.
  """
  iou_threshold = validate_iou_threshold(iou_threshold)
  scores = tf.convert_to_tensor(scores, tf.float32)
  num_candidates = tf.shape(scores)[0]
  max_output_size = tf.maximum(tf.minimum(tf.cast(max_output_size, tf.int32), num_candidates), 0)
  # Stable: equal scores keep candidate order.
  order = tf.argsort(scores, direction="DESCENDING", stable=True)
  if iou_threshold >= 1.0:
    # An IoU never exceeds 1, so nothing is suppressed: plain top-K.
    return order[:max_output_size]
  sorted_boxes = tf.gather(tf.convert_to_tensor(boxes, tf.float32), order)
  sorted_scores = tf.gather(scores, order)
  # TensorFlow's kernel breaks score ties by the lower index; the candidates are
  # already in rank order, so its survivors keep the stable order above.
  kept = tf.image.non_max_suppression(
    sorted_boxes, sorted_scores, max_output_size, iou_threshold=iou_threshold
  )
  return tf.gather(order, kept)
