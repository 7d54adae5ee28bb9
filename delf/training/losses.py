"""Loss terms of the train step (training.md §6.7).

Cross-entropies are summed per replica and divided by the GLOBAL batch; the
reconstruction MSE is each replica's mean divided by the number of replicas, so
that the sum over replicas is the mean over the global batch (KB-20): one device
gives the reference's value and N devices behave like one.
"""

from __future__ import annotations

import tensorflow as tf


def classification_loss(labels: tf.Tensor, logits: tf.Tensor, global_batch_size: int) -> tf.Tensor:
  """Sparse softmax cross-entropy from logits, ``sum / global_batch_size`` (float32)."""
  per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
    labels=tf.cast(labels, tf.int64), logits=tf.cast(logits, tf.float32)
  )
  return tf.reduce_sum(per_example) / float(global_batch_size)


def reconstruction_loss(block3: tf.Tensor, expanded: tf.Tensor, num_replicas: int = 1) -> tf.Tensor:
  """Mean over B, H, W, C of ``(block3 - expanded)^2``, divided by the replica count (KB-20)."""
  diff = tf.cast(block3, tf.float32) - tf.cast(expanded, tf.float32)
  return tf.reduce_mean(tf.square(diff)) / float(num_replicas)


def num_correct(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Number of examples whose arg-max logit is the label (float32)."""
  predictions = tf.argmax(logits, axis=-1, output_type=tf.int64)
  return tf.reduce_sum(tf.cast(tf.equal(predictions, tf.cast(labels, tf.int64)), tf.float32))
