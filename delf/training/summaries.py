"""TensorBoard statistics of the train step (training.md §6.8) without TensorFlow Probability.

Percentiles use sort + gather with the nearest-rank rule (TFP's default
``interpolation='nearest'``), so TFP is not a dependency (KB-24).
"""

from __future__ import annotations

import tensorflow as tf

PERCENTILES = (25, 50, 75)


def percentile(x: tf.Tensor, q: float) -> tf.Tensor:
  """The ``q``-th percentile (0..100) of all values of ``x``, nearest rank."""
  flat = tf.sort(tf.reshape(tf.cast(x, tf.float32), [-1]))
  n = tf.cast(tf.size(flat), tf.float32)
  index = tf.cast(tf.round(q / 100.0 * (n - 1.0)), tf.int32)
  return tf.gather(flat, index)


def attention_statistics(prob: tf.Tensor) -> dict[str, tf.Tensor]:
  """``attention/max|min|mean|percent_25|percent_50|percent_75`` of the attention map."""
  prob = tf.cast(prob, tf.float32)
  stats = {
    "attention/max": tf.reduce_max(prob),
    "attention/min": tf.reduce_min(prob),
    "attention/mean": tf.reduce_mean(prob),
  }
  for q in PERCENTILES:
    stats[f"attention/percent_{q}"] = percentile(prob, q)
  return stats


def sparsity(endpoints: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """``sparsity/<endpoint>``: fraction of exact zeros of every backbone endpoint."""
  return {
    f"sparsity/{key}": 1.0
    - tf.cast(tf.math.count_nonzero(value), tf.float32) / tf.cast(tf.size(value), tf.float32)
    for key, value in endpoints.items()
  }


def image_range(images: tf.Tensor) -> dict[str, tf.Tensor]:
  return {"image_range/max": tf.reduce_max(images), "image_range/min": tf.reduce_min(images)}


ATTENTION_OVERLAY_TAG = "batch_attention_overlay"
ATTENTION_OVERLAY_DESCRIPTION = (
  "Attention map of each training image over the image (turbo colour map: blue = 0, "
  "red = the image's highest attention), interpolated between feature-map cell centres."
)


def write_images(images: tf.Tensor, prob: tf.Tensor, step: int, max_outputs: int = 3) -> None:
  """``batch_images`` ((x + 1) / 2), ``batch_attention`` (prob / max(prob + 1e-3)) and
  ``batch_attention_overlay`` (Ours: the attention drawn over each image).

  Runs eagerly at report steps on the few images the train step already returns
  (no extra model call, nothing traced).
  """
  from delf import attention_plot

  tf.summary.image("batch_images", (tf.cast(images, tf.float32) + 1.0) / 2.0, step, max_outputs)
  prob = tf.cast(prob, tf.float32)
  tf.summary.image("batch_attention", prob / tf.reduce_max(prob + 1e-3), step, max_outputs)
  overlays = attention_plot.batch_overlays(
    tf.cast(images[:max_outputs], tf.float32).numpy(), prob[:max_outputs].numpy()
  )
  tf.summary.image(
    ATTENTION_OVERLAY_TAG,
    overlays,
    step,
    max_outputs,
    description=ATTENTION_OVERLAY_DESCRIPTION,
  )


def write_scalars(values: dict[str, float], step: int) -> None:
  for tag, value in values.items():
    tf.summary.scalar(tag, value, step=step)
