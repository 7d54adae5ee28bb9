"""The DELF/DELG training loop (training.md §6) with our fixes.

``train(config)`` runs the whole job: strategy, datasets, model, optimizer,
checkpoint restore (model, optimizer slots and step, AND the train input
iterator), the step loop, summaries, validation and checkpoints.

Input distribution: every worker reads the same global batch from its own
``create_dataset`` stream and each replica takes its slice (by global replica
id). A plain local ``tf.data`` iterator therefore describes the whole input
position; it is saved in the checkpoint, so a resumed run continues the stream
exactly where it stopped (KB-25), on any number of workers.

Differences from the reference (FIX items): labels validated, never clipped
(KB-10); non-finite losses stop training naming the step (KB-15); ImageNet
weights loaded without a throw-away step, stem included (KB-16); reconstruction
loss averaged over the global batch (KB-20); validation losses logged, train
accuracy averaged over the report interval, validation at least once in debug
(KB-22); validation uses the training forward path (KB-23); percentiles without
TFP (KB-24); resume continues the data stream (KB-25).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from delf import atomic_io, run_lock
from delf.model import heads as model_heads
from delf.progress import ProgressReporter, format_duration
from delf.training import checkpoints, distribution, losses, summaries
from delf.training import optimizer as optimizer_lib
from delf.training.config import CLIP_NORM, MOMENTUM, TrainingConfig
from delf.training.distribution import make_strategy
from delf.training.labels import label_error_message, resolve_num_classes

LOCK_FILENAME = ".train.lock"


class TrainingError(ValueError):
  """A user-facing, one-line reason why training stopped."""


def damaged_shard_message(files: list[str], split: str, error: Exception) -> str:
  """One line naming the damaged TFRecord file and offset behind TensorFlow's DataLossError."""
  from delf.data import tfrecord

  text = getattr(error, "message", None) or str(error)
  match = re.search(r"(truncated|corrupted) record at (\d+)", text)
  offset = int(match.group(2)) if match else None
  found = None
  for path in files:
    damage = None if "://" in path else tfrecord.find_damage(path, offset)
    if damage and (offset is None or offset in (damage[0], damage[0] + 12)):
      found = (path, damage[1])
      break
    if damage and found is None:
      found = (path, damage[1])
  what = match.group(0) if match else text.strip().splitlines()[-1][:200]
  if found is None:
    return (
      f"a {split} TFRecord file is damaged ({what}), but none of the "
      f"{len(files)} matching files could be identified; rebuild the dataset"
    )
  return (
    f"damaged {split} TFRecord shard {found[0]}: {found[1]}; rebuild the dataset "
    "(build_image_dataset.py) or remove this shard from the pattern"
  )


@dataclasses.dataclass
class TrainingResult:
  """What a ``train`` call did (also useful to tests and benchmarks)."""

  logdir: str
  start_step: int
  final_step: int
  num_classes: int
  num_classes_source: str
  history: list[dict] = dataclasses.field(default_factory=list)
  validation: list[dict] = dataclasses.field(default_factory=list)
  first_batch_ids: list[str] = dataclasses.field(default_factory=list)
  steady_images_per_sec: float | None = None


def build_model(config: TrainingConfig, num_classes: int | None):
  """``Delg`` or ``Delf`` as selected by the flags (§6.6)."""
  from delf.model.delf_model import Delf, Delg

  common = {
    "block3_strides": config.block3_strides,
    "use_dim_reduction": config.use_autoencoder,
    "reduced_dimension": config.autoencoder_dimensions,
    "dim_expand_channels": config.local_feature_map_channels,
    "num_classes": num_classes,
    "block_counts": config.block_counts,
    "width_factor": config.width_factor,
  }
  if config.delg_global_features:
    return Delg(
      gem_power=config.delg_gem_power,
      embedding_layer_dim=config.delg_embedding_layer_dim,
      scale_factor_init=config.delg_scale_factor_init,
      arcface_margin=config.delg_arcface_margin,
      **common,
    )
  return Delf(**common)


def should_report(step: int, config: TrainingConfig) -> bool:
  """Summaries and a progress line every ``report_interval`` steps and at the last step."""
  return step % config.report_interval == 0 or step >= config.max_iters


def should_validate(step: int, config: TrainingConfig) -> bool:
  """Every ``eval_interval`` steps; in debug mode also at the last step (KB-22)."""
  return step % config.eval_interval == 0 or (config.debug and step >= config.max_iters)


def should_save(step: int, config: TrainingConfig) -> bool:
  """Every ``save_interval`` steps and at the last step (§6.10)."""
  return step % config.save_interval == 0 or step >= config.max_iters


class _Trainer:
  """State of one ``train`` call (kept in one place rather than closures)."""

  def __init__(self, config: TrainingConfig, strategy: tf.distribute.Strategy | None = None):
    self.config = config
    self.strategy = strategy or make_strategy(config.strategy)
    self.replicas = self.strategy.num_replicas_in_sync
    if config.batch_size % self.replicas:
      raise TrainingError(
        f"--batch_size={config.batch_size} is not divisible by the {self.replicas} replicas"
      )
    self.chief = distribution.is_chief(self.strategy)
    self.work_dir = distribution.worker_dir(self.strategy, config.logdir)
    os.makedirs(self.work_dir, exist_ok=True)
    self.num_classes, self.num_classes_source = resolve_num_classes(config)
    print(f"num_classes = {self.num_classes} (from {self.num_classes_source})", flush=True)
    self._make_datasets()
    with self.strategy.scope():
      self.model = build_model(config, self.num_classes)
      sgd = optimizer_lib.FusedMomentumSGD if config.fused_updates else keras.optimizers.SGD
      optimizer = sgd(learning_rate=config.initial_lr, momentum=MOMENTUM)
      if config.mixed_precision == "fp16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
      optimizer.build(self.model.trainable_variables)
      self.optimizer = optimizer
    # One replica: the clipping factor rides in the fused update (no rescaling pass).
    self._clip_fold = (
      optimizer
      if config.fused_updates and self.replicas == 1 and config.mixed_precision != "fp16"
      else None
    )
    self.checkpoint = tf.train.Checkpoint(
      model=self.model, optimizer=self.optimizer, train_iterator=self.train_iterator
    )
    self.manager = tf.train.CheckpointManager(
      self.checkpoint,
      directory=os.path.join(self.work_dir, checkpoints.CHECKPOINT_SUBDIR),
      max_to_keep=10 if self.chief else 1,
      keep_checkpoint_every_n_hours=3,
    )
    self._train_step = tf.function(self._distributed_train_step)
    self._eval_step = tf.function(self._distributed_eval_step)
    grads_fn = self._replica_gradients
    self._replica_gradients_fn = (
      tf.function(grads_fn, jit_compile=True) if config.jit_compile else grads_fn
    )
    if self.chief:
      self.writer = tf.summary.create_file_writer(
        os.path.join(config.logdir, "train_logs"), flush_millis=10000
      )
    else:
      self.writer = tf.summary.create_noop_writer()

  def _check_shards(self) -> None:
    """Refuses shards that are not one complete build, or that hold no example (issue 8)."""
    from delf.data import metadata

    config = self.config
    self.shard_files = {}
    sizes = {}
    for split, pattern in (
      ("train", config.train_file_pattern),
      ("validation", config.validation_file_pattern),
    ):
      files = sorted(tf.io.gfile.glob(pattern))
      if not files:
        raise TrainingError(f"no TFRecord files match --{split}_file_pattern={pattern!r}")
      flag = f"--{split}_file_pattern={pattern}"
      try:
        shards = metadata.verify_shards(files, flag)
      except ValueError as e:
        raise TrainingError(str(e)) from None
      if shards.num_examples == 0:
        raise TrainingError(
          f"the {len(files)} file(s) matching {flag} hold no examples; build the dataset "
          "again (build_image_dataset.py) or fix the pattern"
        )
      self.shard_files[split] = files
      sizes[split] = shards.num_examples
    both = sorted(set(self.shard_files["train"]) & set(self.shard_files["validation"]))
    if both:
      raise TrainingError(
        f"{both[0]} is matched by both --train_file_pattern and --validation_file_pattern "
        "(validation images would also train); make the patterns disjoint"
      )
    self.validation_size = sizes["validation"]
    print(
      "Data: "
      + ", ".join(
        f"{split} {'?' if sizes[split] is None else sizes[split]} examples in "
        f"{len(self.shard_files[split])} file(s)"
        for split in ("train", "validation")
      ),
      flush=True,
    )

  def _make_datasets(self) -> None:
    from delf.data.pipeline import create_dataset

    config = self.config
    self._check_shards()
    try:
      train = create_dataset(
        config.train_file_pattern,
        image_size=config.image_size,
        batch_size=config.batch_size,
        augmentation=config.use_augmentation,
        seed=config.seed,
        include_ids=True,
      )
      self.validation_dataset = create_dataset(
        config.validation_file_pattern,
        image_size=config.image_size,
        batch_size=config.batch_size,
        augmentation=False,
        seed=config.seed,
        include_ids=True,
      )
    except ValueError as e:
      raise TrainingError(str(e)) from None
    self.train_iterator = iter(train)
    self.validation_iterator = None
    self._eval_remainder = None
    self.validation_pass = None
    if self.validation_size is not None and (
      self.validation_size <= config.num_eval_batches * config.batch_size
    ):
      # The split is smaller than what a validation reads: one exact pass instead of
      # num_eval_batches batches of the repeated stream (50000 / batch_size by default).
      self.validation_pass = create_dataset(
        config.validation_file_pattern,
        image_size=config.image_size,
        batch_size=config.batch_size,
        augmentation=False,
        seed=config.seed,
        include_ids=True,
        repeat=False,
      )

  # ---- graph functions -------------------------------------------------------------------

  def _replica_gradients(self, images, labels):
    config, model = self.config, self.model
    global_batch = config.batch_size
    fp16 = config.mixed_precision == "fp16"
    with tf.GradientTape() as tape:
      out = model.global_and_local_forward_pass(images, training=True)
      desc_logits = model.desc_logits(out["global_descriptor"], labels, training=True)
      attn_logits = model.attn_logits(out["attention_prelogits"])
      desc_loss = losses.classification_loss(labels, desc_logits, global_batch)
      attn_loss = losses.classification_loss(labels, attn_logits, global_batch)
      if config.use_autoencoder:
        recon_loss = losses.reconstruction_loss(out["block3"], out["expanded"], self.replicas)
      else:
        recon_loss = tf.constant(0.0)
      total = (
        desc_loss
        + config.attention_loss_weight * attn_loss
        + config.reconstruction_loss_weight * recon_loss
      )
      objective = self.optimizer.scale_loss(total) if fp16 else total
    variables = model.trainable_variables
    # Large dense heads: (kernel, input, logits); the gradient of their logits gives the
    # squared norm of their kernel gradient from [B, B] Gram matrices (delf.model.heads).
    dense_heads = [] if fp16 else self._dense_heads(out, desc_logits, attn_logits)
    all_grads = tape.gradient(objective, [*variables, *(logits for _, _, logits in dense_heads)])
    grads = all_grads[: len(variables)]
    if fp16:
      grads = [g / self.optimizer.dynamic_scale for g in grads]
    norm = None
    if dense_heads:
      kernels = {
        id(kernel): (x, g) for (kernel, x, _), g in zip(dense_heads, all_grads[len(grads) :])
      }
      norm = optimizer_lib.global_norm_with_dense_kernels(
        grads, [kernels.get(id(v)) for v in variables]
      )
    # Per replica, before the cross-replica sum in apply_gradients (KEEP, KB-21).
    grads, _ = optimizer_lib.clip_by_global_norm(
      grads, CLIP_NORM, fold_into=self._clip_fold, norm=norm
    )
    metrics = {
      "desc_loss": desc_loss,
      "attn_loss": attn_loss,
      "recon_loss": recon_loss,
      "desc_correct": losses.num_correct(labels, desc_logits),
      "attn_correct": losses.num_correct(labels, attn_logits),
    }
    prob = out["attention_prob"]
    stats = {
      **summaries.attention_statistics(prob),
      **summaries.sparsity(out["endpoints"]),
      **summaries.image_range(images),
    }
    return grads, metrics, stats, images[:3], tf.cast(prob[:3], tf.float32)

  def _dense_heads(self, out, desc_logits, attn_logits) -> list:
    """``(kernel, input, logits)`` of the large dense heads (not DELG's cosine head)."""
    model = self.model
    candidates = [
      (model.attn_classification, out["attention_prelogits"], attn_logits),
      (model.desc_classification, out["global_descriptor"], desc_logits),
    ]
    return [
      (layer.kernel, tf.cast(x, tf.float32), logits)
      for layer, x, logits in candidates
      if isinstance(layer, model_heads.DenseClassifier) and layer.is_large
    ]

  def _replica_train_step(self, images, labels):
    grads, metrics, stats, images, prob = self._replica_gradients_fn(images, labels)
    if self.config.mixed_precision == "fp16":
      grads = [g * self.optimizer.dynamic_scale for g in grads]
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    return metrics, stats, images, prob

  def _distributed_train_step(self, images, labels):
    metrics, stats, images, prob = self.strategy.run(
      self._replica_train_step, args=(images, labels)
    )
    sum_ = tf.distribute.ReduceOp.SUM
    metrics = {k: self.strategy.reduce(sum_, v, axis=None) for k, v in metrics.items()}
    return metrics, stats, images, prob

  def _replica_eval_step(self, images, labels):
    model, global_batch = self.model, self.config.batch_size
    # Same forward path as training (autoencoder included), training=False (KB-23).
    out = model.global_and_local_forward_pass(images, training=False)
    desc_logits = model.desc_logits(out["global_descriptor"], labels, training=False)
    attn_logits = model.attn_logits(out["attention_prelogits"])
    return {
      "desc_loss": losses.classification_loss(labels, desc_logits, global_batch),
      "attn_loss": losses.classification_loss(labels, attn_logits, global_batch),
      "desc_correct": losses.num_correct(labels, desc_logits),
      "attn_correct": losses.num_correct(labels, attn_logits),
    }

  def _distributed_eval_step(self, images, labels):
    metrics = self.strategy.run(self._replica_eval_step, args=(images, labels))
    sum_ = tf.distribute.ReduceOp.SUM
    return {k: self.strategy.reduce(sum_, v, axis=None) for k, v in metrics.items()}

  # ---- host side -------------------------------------------------------------------------

  def _check_labels(self, labels: np.ndarray, ids: np.ndarray, split: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
    if bad.size:
      i = int(bad[0])
      raise TrainingError(
        label_error_message(
          int(labels[i]),
          ids[i].decode("utf8", "replace"),
          split,
          self.num_classes,
          self.num_classes_source,
          self.config.dataset_version,
        )
      )

  def _next_batch(self, iterator, split: str, distribute: bool = True):
    try:
      images, labels, ids = next(iterator)
    except StopIteration:
      raise TrainingError(
        f"the {split} files ({len(self.shard_files[split])} matching --{split}_file_pattern) "
        "hold no examples"
      ) from None
    except tf.errors.DataLossError as e:
      raise TrainingError(damaged_shard_message(self.shard_files[split], split, e)) from None
    self._check_labels(labels.numpy(), ids.numpy(), split)
    gb = self.config.batch_size
    if not distribute:
      return images, labels, ids
    return (
      distribution.distribute(self.strategy, images, gb),
      distribution.distribute(self.strategy, labels, gb),
      ids,
    )

  def _set_learning_rate(self, step: int) -> float:
    lr = self.config.initial_lr * (1.0 - step / self.config.max_iters)
    self.optimizer.learning_rate = lr
    return lr

  def _step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def restore_or_initialize(self) -> int:
    chief_ckpt_dir = os.path.join(self.config.logdir, checkpoints.CHECKPOINT_SUBDIR)
    latest = tf.train.latest_checkpoint(chief_ckpt_dir)
    if latest:
      self._check_same_model(latest)
      try:
        self.checkpoint.restore(latest).assert_existing_objects_matched()
      except (AssertionError, ValueError) as e:
        raise TrainingError(
          f"{latest}: checkpoint does not match the model built from these flags "
          f"({str(e).splitlines()[0][:200]})"
        ) from None
      step = self._step()
      print(f"Resumed from {latest} at step {step} (data stream continues)", flush=True)
      if self.config.init_from:
        print(f"--init_from={self.config.init_from} ignored: the run resumes", flush=True)
      return step
    if self.config.init_from:
      from delf.training.init_from import initialize_from

      initialize_from(self.model, self.config.init_from)
    if self.config.imagenet_checkpoint:
      from delf.model.imagenet_weights import load_imagenet_weights

      count = load_imagenet_weights(self.model.backbone, self.config.imagenet_checkpoint)
      print(f"Loaded {count} backbone layers from {self.config.imagenet_checkpoint}", flush=True)
    return self._step()

  def _check_same_model(self, latest: str) -> None:
    path = os.path.join(self.config.logdir, checkpoints.MODEL_CONFIG_FILENAME)
    if not os.path.exists(path):
      return
    saved = checkpoints.read_model_config(path)
    current = checkpoints.model_config_dict(self.model)
    if saved["model_class"] != current["model_class"]:
      differing = ["model_class"]
    else:
      keys = set(saved["config"]) | set(current["config"])
      differing = sorted(k for k in keys if saved["config"].get(k) != current["config"].get(k))
    if differing:
      raise TrainingError(
        f"{latest}: the logdir holds a checkpoint of a different model ({path} differs in "
        f"{', '.join(differing)}); use the same model flags or a new --logdir"
      )

  def write_training_config(self) -> None:
    if not self.chief:
      return
    data = {
      "format_version": 1,
      "config": self.config.to_json_dict(),
      "num_classes": self.num_classes,
      "num_classes_source": self.num_classes_source,
      "num_replicas": self.replicas,
      "model_class": checkpoints.model_class_of(self.model),
      "tensorflow_version": tf.__version__,
    }
    path = os.path.join(self.config.logdir, checkpoints.TRAINING_CONFIG_FILENAME)
    atomic_io.write_text_atomic(path, json.dumps(data, indent=2) + "\n")

  def save(self, step: int) -> None:
    self.manager.save(checkpoint_number=step)
    checkpoints.write_model_weights(self.model, self.work_dir)
    if self.chief:
      checkpoints.write_model_config(self.model, self.config.logdir)

  def validate(self, step: int) -> dict:
    config = self.config
    if self.validation_pass is not None:
      # One exact pass over the whole (small) validation split.
      iterator = iter(self.validation_pass)
      n = -(-self.validation_size // config.batch_size)
      total_examples = self.validation_size
    else:
      if self.validation_iterator is None:
        self.validation_iterator = iter(self.validation_dataset)
      iterator = self.validation_iterator
      n = config.num_eval_batches
      total_examples = n * config.batch_size
    totals = {"desc_loss": 0.0, "attn_loss": 0.0, "desc_correct": 0.0, "attn_correct": 0.0}
    print(
      f"validation at step {step}: {total_examples} images in {n} batches"
      + (" (one pass over the validation split)" if self.validation_pass is not None else ""),
      flush=True,
    )
    progress = ProgressReporter(
      f"validation at step {step}", total_examples, "images", every_items=10**9
    )
    examples = 0
    for _ in range(n):
      images, labels, ids = self._next_batch(iterator, "validation", distribute=False)
      if int(ids.shape[0]) == config.batch_size or self.replicas == 1:
        gb = config.batch_size
        values = self._eval_step(
          distribution.distribute(self.strategy, images, gb),
          distribution.distribute(self.strategy, labels, gb),
        )
      else:
        # The last, smaller batch of an exact pass: some replicas would get no example
        # (which the model cannot run on), so it runs once, outside the replicas.
        if self._eval_remainder is None:
          self._eval_remainder = tf.function(self._replica_eval_step)
        with self.strategy.scope():
          values = self._eval_remainder(images, labels)
      for key, value in values.items():
        totals[key] += float(value)
      examples += int(ids.shape[0])
      progress.update(int(ids.shape[0]))
    # Losses are sums divided by the global batch size: back to a mean per example.
    loss_scale = config.batch_size / examples
    result = {
      "step": step,
      "validation/desc": totals["desc_correct"] / examples,
      "validation/attn": totals["attn_correct"] / examples,
      "validation_loss/desc": totals["desc_loss"] * loss_scale,
      "validation_loss/attn": totals["attn_loss"] * loss_scale,
      "examples": examples,
    }
    with self.writer.as_default():
      summaries.write_scalars(
        {k: v for k, v in result.items() if k not in ("step", "examples")}, step
      )
    print(
      f"validation at step {step} ({examples} images): accuracy desc {result['validation/desc']:.4f} "
      f"attn {result['validation/attn']:.4f}, loss desc {result['validation_loss/desc']:.4f} "
      f"attn {result['validation_loss/attn']:.4f}",
      flush=True,
    )
    return result

  def run(self) -> TrainingResult:
    config = self.config
    step = start_step = self.restore_or_initialize()
    self.write_training_config()
    result = TrainingResult(
      config.logdir, start_step, step, self.num_classes, self.num_classes_source
    )
    if step >= config.max_iters:
      print(f"Nothing to do: step {step} >= --max_iters={config.max_iters}", flush=True)
      return result
    interval = {"desc_correct": 0.0, "attn_correct": 0.0, "examples": 0, "steps": 0}
    interval_start = time.monotonic()
    run_start = interval_start
    steady = None  # (time, step) after the first report: excludes tracing.
    skipped = 0
    while step < config.max_iters:
      images, labels, ids = self._next_batch(self.train_iterator, "train")
      if not result.first_batch_ids:
        result.first_batch_ids = [i.decode("utf8") for i in ids.numpy()]
      lr = self._set_learning_rate(step)
      metrics, stats, batch_images, prob = self._train_step(images, labels)
      previous_step, step = step, self._step()
      values = {k: float(v) for k, v in metrics.items()}
      total = (
        values["desc_loss"]
        + config.attention_loss_weight * values["attn_loss"]
        + config.reconstruction_loss_weight * values["recon_loss"]
      )
      if not math.isfinite(total):
        latest = self.manager.latest_checkpoint or "none written yet"
        raise TrainingError(
          f"non-finite loss at step {step} (desc {values['desc_loss']}, attn "
          f"{values['attn_loss']}, recon {values['recon_loss']}); stopped without saving, "
          f"the last checkpoint ({latest}) is intact: lower --initial_lr or check the data"
        )
      if step == previous_step:
        # fp16 loss scaling skipped the update (gradient overflow); the step did not count.
        skipped += 1
        continue
      interval["desc_correct"] += values["desc_correct"]
      interval["attn_correct"] += values["attn_correct"]
      interval["examples"] += config.batch_size
      interval["steps"] += 1
      if should_report(step, config):
        now = time.monotonic()
        elapsed = now - interval_start
        record = {
          "step": step,
          "learning_rate": lr,
          "loss/desc/crossentropy": values["desc_loss"],
          "loss/attn/crossentropy": values["attn_loss"],
          "train_accuracy/desc": interval["desc_correct"] / interval["examples"],
          "train_accuracy/attn": interval["attn_correct"] / interval["examples"],
          "global_steps_per_sec": interval["steps"] / elapsed if elapsed > 0 else 0.0,
        }
        if config.use_autoencoder:
          record["loss/recon/mse"] = values["recon_loss"]
        images_per_sec = interval["examples"] / elapsed if elapsed > 0 else 0.0
        self._write_summaries(record, stats, batch_images, prob, step)
        eta = (config.max_iters - step) / max(interval["steps"] / max(elapsed, 1e-9), 1e-9)
        print(
          f"step {step}/{config.max_iters}: loss desc {values['desc_loss']:.4f} "
          f"attn {values['attn_loss']:.4f} recon {values['recon_loss']:.4f} | train accuracy "
          f"desc {record['train_accuracy/desc']:.3f} attn {record['train_accuracy/attn']:.3f} | "
          f"lr {lr:.6f} | {images_per_sec:.2f} images/s | elapsed "
          f"{format_duration(now - run_start)}, ETA {format_duration(eta)}",
          flush=True,
        )
        result.history.append(
          {**record, "images_per_sec": images_per_sec, "interval_examples": interval["examples"]}
        )
        if steady is None:
          steady = (now, step)
        elif step > steady[1]:  # images/s after the first report (tracing excluded)
          result.steady_images_per_sec = (step - steady[1]) * config.batch_size / (now - steady[0])
        interval = {"desc_correct": 0.0, "attn_correct": 0.0, "examples": 0, "steps": 0}
        interval_start = now
      if should_validate(step, config):
        result.validation.append(self.validate(step))
      if should_save(step, config):
        self.save(step)
    result.final_step = step
    self.writer.flush()
    if not self.chief and os.path.isdir(self.work_dir):
      shutil.rmtree(self.work_dir, ignore_errors=True)
    if skipped:
      print(f"{skipped} batches skipped by fp16 loss scaling (gradient overflow)", flush=True)
    print("Finished training", flush=True)
    return result

  def _write_summaries(self, record, stats, batch_images, prob, step) -> None:
    local = self.strategy.experimental_local_results
    stats = {k: float(local(v)[0]) for k, v in stats.items()}
    scalars = {k: v for k, v in record.items() if k != "step"}
    if self.config.delg_global_features:
      scalars["desc/scale_factor"] = float(self.model.desc_classification.scale_factor.numpy())
    with self.writer.as_default():
      summaries.write_scalars({**scalars, **stats}, step)
      summaries.write_images(local(batch_images)[0], local(prob)[0], step)


def _tf_framework_config():
  """TensorFlow's config module that has the op-determinism getter and switch-off."""
  from tensorflow.python.framework import config as tf_framework_config

  return tf_framework_config


def op_determinism_enabled() -> bool:
  """Whether TensorFlow op determinism is on (no public getter exists)."""
  return bool(_tf_framework_config().is_op_determinism_enabled())


def make_deterministic(seed: int) -> None:
  """``--deterministic``: the same flags give the same losses and weights on one machine.

  Seeds Python's ``random``, NumPy, TensorFlow and Keras (the weight initialisers)
  and turns on op determinism: TensorFlow then picks deterministic kernels (or
  refuses an op that has none) and runs stateful random ops in a fixed order. The
  input pipeline is already deterministic: shuffle and crops are seeded by
  ``--seed`` and the parallel map keeps the record order (delf.data.pipeline).
  """
  keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()
  print(f"Deterministic run: seed {seed}, TensorFlow op determinism on", flush=True)


def _logdir_lock(config: TrainingConfig, strategy) -> run_lock.RunLock:
  """One run per logdir (per worker folder): a second run would write the same checkpoints."""
  work_dir = distribution.worker_dir(strategy, config.logdir) if strategy else config.logdir
  os.makedirs(work_dir, exist_ok=True)
  try:
    return run_lock.acquire(os.path.join(work_dir, LOCK_FILENAME), f"--logdir={config.logdir}")
  except run_lock.LockedError as e:
    raise TrainingError(str(e)) from None


def train(config: TrainingConfig) -> TrainingResult:
  """Trains DELF/DELG as configured; returns what was done.

  Raises:
    TrainingError: one-line, user-facing reasons (bad labels, non-finite loss,
      missing data, checkpoint mismatch). ``ValueError`` for bad ImageNet files.
  """
  config = config.resolved()
  if os.path.exists(config.logdir) and not os.path.isdir(config.logdir):
    raise TrainingError(f"--logdir={config.logdir} is a file, not a directory")
  os.makedirs(config.logdir, exist_ok=True)
  if config.strategy == "multi_worker_mirrored":
    strategy = make_strategy(config.strategy)  # before any other TF call
  else:
    strategy = None
  previous_policy = keras.mixed_precision.global_policy()
  previous_eager = tf.config.functions_run_eagerly()
  previous_determinism = op_determinism_enabled()
  try:
    if config.deterministic:
      make_deterministic(config.seed)
    if config.mixed_precision != "none":
      policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[config.mixed_precision]
      keras.mixed_precision.set_global_policy(policy)
    if config.debug:
      tf.config.run_functions_eagerly(True)
      print(f"debug: {len(tf.config.list_logical_devices())} logical devices", flush=True)
    with _logdir_lock(config, strategy):
      return _Trainer(config, strategy).run()
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
    tf.config.run_functions_eagerly(previous_eager)
    if config.deterministic and not previous_determinism:
      _tf_framework_config().disable_op_determinism()
