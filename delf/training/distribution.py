"""tf.distribute strategy selection and per-replica slicing of the global batch.

Every worker reads the same global batch; each replica takes its slice by global
replica id, so the local tf.data iterator describes the whole input position (KB-25).
"""

from __future__ import annotations

import os

import tensorflow as tf


def make_strategy(name: str) -> tf.distribute.Strategy:
  """mirrored: all GPUs (or all logical CPUs without GPU); multi_worker_mirrored: TF_CONFIG."""
  if name == "multi_worker_mirrored":
    # Must come before anything initialises the TF context (even listing devices).
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = tf.config.list_logical_devices("GPU")
  if name == "mirrored":
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])
  return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def is_chief(strategy) -> bool:
  return bool(getattr(strategy.extended, "should_checkpoint", True))


def worker_dir(strategy, logdir: str) -> str:
  """The chief writes into ``logdir``; other workers into a private temporary folder."""
  if is_chief(strategy):
    return logdir
  task_id = getattr(getattr(strategy, "cluster_resolver", None), "task_id", 0)
  return os.path.join(logdir, f".worker_tmp_{task_id}")


def distribute(strategy, tensor: tf.Tensor, global_batch: int):
  replicas = strategy.num_replicas_in_sync
  if replicas == 1:
    return tensor
  per_replica = global_batch // replicas

  def value_fn(context):
    start = context.replica_id_in_sync_group * per_replica
    return tensor[start : start + per_replica]

  return strategy.experimental_distribute_values_from_function(value_fn)
