"""train.py with bad data and concurrent runs; validation cost; loss weighting and clipping.

Issue 8 items 2 (train side), 4, 5, 6, 7 and the "tests weaker than they look" list: loss
weighting, gradient clipping, validation with the autoencoder on (KB-23). The tiny backbone
at 64 px is used throughout (tests.model_fixtures).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from delf import run_lock
from delf.data import build
from delf.training import checkpoints, loop
from delf.training.config import TrainingConfig
from delf.training.loop import TrainingError, train
from tests import cli_harness
from tests import model_fixtures as mf
from tests.data_fixtures import make_tiny_gldv2

TINY_FLAGS = [
  "--batch_size=8",
  "--image_size=64",
  "--backbone_block_counts=1,1,1,1",
  "--backbone_width_factor=0.0625",
  "--local_feature_map_channels=64",
  "--autoencoder_dimensions=16",
]


def tiny_config(data_dir, logdir, **overrides) -> TrainingConfig:
  kwargs = {
    "logdir": str(logdir),
    "train_file_pattern": f"{data_dir}/train-*",
    "validation_file_pattern": f"{data_dir}/validation-*",
    "batch_size": 8,
    "image_size": 64,
    "block_counts": mf.TINY_BLOCK_COUNTS,
    "width_factor": mf.TINY_WIDTH_FACTOR,
    "local_feature_map_channels": mf.TINY_LOCAL_CHANNELS,
    "autoencoder_dimensions": 16,
    "use_augmentation": False,
  }
  kwargs.update(overrides)
  return TrainingConfig(**kwargs)


def run_train(data_dir, logdir, *args) -> int:
  return cli_harness.run_script(
    "train",
    [
      *TINY_FLAGS,
      f"--train_file_pattern={data_dir}/train-*",
      f"--validation_file_pattern={data_dir}/validation-*",
      f"--logdir={logdir}",
      *args,
    ],
  )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """4 classes, 16 train examples in 2 shards, 4 validation examples (no manifest)."""
  directory = tmp_path_factory.mktemp("hard_tfrecords")
  mf.write_tiny_tfrecords(
    directory, train_per_class=4, validation_per_class=1, metadata_num_classes=4
  )
  return directory


@pytest.fixture(scope="module")
def built_dir(tmp_path_factory):
  """A build_image_dataset output (with its manifest) of 3 landmarks."""
  root = tmp_path_factory.mktemp("hard_build")
  info = make_tiny_gldv2(root / "gldv2", num_landmarks=3, images_per_landmark=4)
  output = root / "tfrecord"
  build.build_image_dataset(
    build.BuildConfig(
      train_directory=str(info.root / "train" / "*" / "*" / "*"),
      output_directory=str(output),
      train_clean_csv_path=str(info.root / "train" / "train_clean.csv"),
      num_shards=2,
      generate_train_validation_splits=True,
      num_workers=1,
    )
  )
  return output


def _error_line(capsys) -> str:
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  return err[0]


# ---- item 4: no examples ------------------------------------------------------------------


def test_empty_shards_are_an_error_not_a_finished_training(tmp_path, capsys):
  data = tmp_path / "data"
  data.mkdir()
  for name in ("train-00000-of-00002", "train-00001-of-00002", "validation-00000-of-00001"):
    (data / name).write_bytes(b"")
  rc = run_train(data, tmp_path / "log", "--max_iters=5", "--num_classes=4")
  assert rc == 1
  message = _error_line(capsys)
  assert "matching --train_file_pattern=" in message and "hold no examples" in message
  assert not (tmp_path / "log" / "delf_weights.index").exists()


def test_empty_validation_split_is_an_error(data_dir, tmp_path, capsys):
  data = tmp_path / "data"
  shutil.copytree(data_dir, data)
  (data / "validation-00000-of-00001").write_bytes(b"")
  assert run_train(data, tmp_path / "log", "--max_iters=2") == 1
  assert "--validation_file_pattern" in _error_line(capsys)


# ---- item 5: damaged shards ---------------------------------------------------------------


def test_truncated_shard_is_named_with_its_offset(data_dir, tmp_path, capsys):
  data = tmp_path / "data"
  shutil.copytree(data_dir, data)
  shard = data / "train-00001-of-00002"
  content = shard.read_bytes()
  shard.write_bytes(content[: len(content) - 500])
  assert run_train(data, tmp_path / "log", "--max_iters=2") == 1
  message = _error_line(capsys)
  assert f"damaged TFRecord shard {shard}" in message
  assert re.search(r"truncated record at byte \d+", message)


def test_bit_flip_found_at_run_time_names_the_shard_and_offset(data_dir, tmp_path, capsys):
  data = tmp_path / "data"
  shutil.copytree(data_dir, data)
  shard = data / "train-00000-of-00002"
  content = bytearray(shard.read_bytes())
  content[len(content) // 2] ^= 0x40  # inside some record's data: only its CRC sees it
  shard.write_bytes(bytes(content))
  assert run_train(data, tmp_path / "log", "--max_iters=3") == 1
  message = _error_line(capsys)
  match = re.search(
    r"damaged train TFRecord shard (\S+): corrupted record \(data checksum\) at byte (\d+)", message
  )
  assert match, message
  assert match.group(1) == str(shard)
  offset = int(match.group(2))
  # The offset is the start of the record that holds the flipped byte.
  from delf.data import tfrecord

  assert offset < len(content) // 2
  assert tfrecord.find_damage(shard) == (offset, match.group(0).split(": ", 1)[1])


def test_damage_message_without_a_file_that_can_be_identified(tmp_path):
  good = tmp_path / "good"
  mf.write_tiny_tfrecords(good, train_per_class=1, validation_per_class=1)
  files = sorted(glob.glob(f"{good}/train-*"))
  message = loop.damaged_shard_message(
    files, "train", tf.errors.DataLossError(None, None, "corrupted record at 12")
  )
  assert "none of the 2 matching files could be identified" in message


# ---- item 2, train side: the shards must be one complete build -----------------------------


def test_foreign_shard_beside_a_build_is_refused(built_dir, tmp_path, capsys):
  data = tmp_path / "data"
  shutil.copytree(built_dir, data)
  shutil.copy(data / "train-00000-of-00002", data / "train-00000-of-00003")  # an older build
  assert run_train(data, tmp_path / "log", "--max_iters=1") == 1
  message = _error_line(capsys)
  assert "train-00000-of-00003, which is not a shard of the build described by" in message


def test_shard_of_another_size_or_missing_is_refused(built_dir, tmp_path, capsys):
  data = tmp_path / "data"
  shutil.copytree(built_dir, data)
  shard = data / "train-00001-of-00002"
  shard.write_bytes(shard.read_bytes() + b"\0")
  assert run_train(data, tmp_path / "log", "--max_iters=1") == 1
  assert "parts of two builds" in _error_line(capsys)
  shard.unlink()
  assert run_train(data, tmp_path / "log", "--max_iters=1") == 1
  assert "train-00001-of-00002 is listed in" in _error_line(capsys)


def test_overlapping_patterns_are_refused(built_dir, tmp_path, capsys):
  rc = cli_harness.run_script(
    "train",
    [
      *TINY_FLAGS,
      f"--train_file_pattern={built_dir}/*-of-*",
      f"--validation_file_pattern={built_dir}/validation-*",
      f"--logdir={tmp_path / 'log'}",
      "--max_iters=1",
    ],
  )
  assert rc == 1
  assert "validation images would also train" in _error_line(capsys)


def test_complete_build_trains_and_reports_its_sizes(built_dir, tmp_path, capsys):
  meta = build.metadata.read_metadata(str(built_dir))
  assert run_train(built_dir, tmp_path / "log", "--max_iters=1", "--eval_interval=1") == 0
  out = capsys.readouterr().out
  sizes = meta["num_examples"]
  assert (
    f"Data: train {sizes['train']} examples in 2 file(s), validation {sizes['validation']}" in out
  )
  assert f"validation at step 1: {sizes['validation']} images in 1 batches (one pass" in out


# ---- item 6: one run per logdir ---------------------------------------------------------


def test_second_run_on_the_same_logdir_is_refused(data_dir, tmp_path, capsys):
  logdir = tmp_path / "log"
  logdir.mkdir()
  held = run_lock.acquire(str(logdir / loop.LOCK_FILENAME), "the first run")
  try:
    assert run_train(data_dir, logdir, "--max_iters=1") == 1
    message = _error_line(capsys)
    assert f"--logdir={logdir} is in use by a run that is still going (pid {os.getpid()}" in message
  finally:
    held.release()
  assert not (logdir / "delf_tf2-ckpt").exists()


def test_a_killed_holder_does_not_leave_the_logdir_locked(data_dir, tmp_path):
  logdir = tmp_path / "log"
  logdir.mkdir()
  code = (
    "import os, sys; from delf import run_lock; "
    f"run_lock.acquire({str(logdir / loop.LOCK_FILENAME)!r}, 'x'); "
    "print('locked', flush=True); os.kill(os.getpid(), 9)"
  )
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
  assert proc.stdout.strip() == "locked" and proc.returncode == -9
  assert (logdir / loop.LOCK_FILENAME).exists()  # the file stays; the lock does not
  result = train(tiny_config(data_dir, logdir, max_iters=1))
  assert result.final_step == 1
  # (That a finished run frees the lock in the same process: test_train's resume test.)


def test_logdir_that_is_a_file(data_dir, tmp_path):
  target = tmp_path / "log"
  target.write_text("x")
  with pytest.raises(TrainingError, match=r"--logdir=.*log is a file, not a directory"):
    train(tiny_config(data_dir, target, max_iters=1))


# ---- item 7: validation cost and the new interval flags ------------------------------------


def test_validation_reads_one_pass_of_a_small_split(data_dir, tmp_path, capsys):
  rc = run_train(
    data_dir, tmp_path / "log", "--max_iters=4", "--eval_interval=2", "--save_interval=3"
  )
  assert rc == 0
  out = capsys.readouterr().out
  # 4 validation images: one batch of 4, not 50000 / 8 = 6250 batches.
  assert out.count("validation at step 2: 4 images in 1 batches (one pass") == 1
  assert "validation at step 4 (4 images): accuracy" in out
  ckpts = sorted(
    int(re.search(r"ckpt-(\d+)", p).group(1))
    for p in glob.glob(f"{tmp_path}/log/delf_tf2-ckpt/*.index")
  )
  assert ckpts == [3, 4]  # --save_interval=3 and the last step


def test_num_eval_examples_bounds_a_large_split(data_dir, tmp_path):
  config = tiny_config(
    data_dir, tmp_path, max_iters=1, eval_interval=1, num_eval_examples=2, batch_size=2
  )
  result = train(config)
  # 4 validation images > 2: the reference's way, int(2 / 2) = 1 batch of the stream.
  assert result.validation[-1]["examples"] == 2


def test_debug_and_flags_resolve_the_reference_constants():
  assert TrainingConfig().resolved().num_eval_batches == 1562  # 50000 / 32
  assert TrainingConfig(num_eval_examples=640).resolved().num_eval_batches == 20
  with pytest.raises(ValueError, match="num_eval_examples must be >= 1"):
    TrainingConfig(num_eval_examples=0)


def test_validation_with_the_autoencoder_uses_the_training_path(data_dir, tmp_path):
  """KB-23: validation pools the autoencoder's reconstruction, as training does."""
  from delf.data.pipeline import create_dataset
  from delf.model import attention
  from delf.training import losses

  # Seeded, so that the two poolings' gap below is the same on every run.
  config = tiny_config(
    data_dir, tmp_path, max_iters=1, eval_interval=1, use_autoencoder=True, deterministic=True
  )
  logged = train(config).validation[-1]
  model = checkpoints.load_trained_model(str(tmp_path), num_classes=4)
  images, labels, _ = next(
    iter(
      create_dataset(
        config.validation_file_pattern,
        image_size=64,
        batch_size=8,
        include_ids=True,
        repeat=False,
      )
    )
  )
  out = model.global_and_local_forward_pass(images, training=False)
  attn_logits = model.attn_logits(out["attention_prelogits"])
  n = int(labels.shape[0])
  expected_loss = float(losses.classification_loss(labels, attn_logits, n))
  expected_accuracy = float(losses.num_correct(labels, attn_logits)) / n
  assert logged["examples"] == n == 4
  assert logged["validation_loss/attn"] == pytest.approx(expected_loss, rel=1e-4)
  assert logged["validation/attn"] == pytest.approx(expected_accuracy)
  # The reference's validation pooled raw block3 instead: a different number.
  raw_logits = model.attn_logits(attention.attention_pool(out["block3"], out["attention_prob"]))
  raw_loss = float(losses.classification_loss(labels, raw_logits, n))
  assert abs(raw_loss - expected_loss) > 1e-3


# ---- loss weighting and gradient clipping ---------------------------------------------------


@pytest.fixture(scope="module")
def trainer_and_batch(data_dir, tmp_path_factory):
  config = tiny_config(data_dir, tmp_path_factory.mktemp("weights"), max_iters=1).resolved()
  trainer = loop._Trainer(config)
  images, labels, _ = trainer._next_batch(trainer.train_iterator, "train")
  trainer.model.global_and_local_forward_pass(images, training=False)  # build variables
  return trainer, images, labels


def _grads(trainer, images, labels, **weights) -> list[np.ndarray]:
  base = trainer.config
  trainer.config = dataclasses.replace(base, **weights)
  try:
    grads, metrics, *_ = trainer._replica_gradients(images, labels)
  finally:
    trainer.config = base
  grads = [g.numpy() for g in grads]
  if trainer._clip_fold is not None:  # The clipping factor rides in the fused update.
    scale = float(trainer._clip_fold._gradient_scale.numpy())
    grads = [g * scale for g in grads]
  return grads, {k: float(v) for k, v in metrics.items()}


def test_loss_weights_scale_each_term(trainer_and_batch, monkeypatch):
  trainer, images, labels = trainer_and_batch
  monkeypatch.setattr(loop, "CLIP_NORM", 1e12)  # linearity needs the raw gradients
  g00, metrics = _grads(
    trainer, images, labels, attention_loss_weight=0.0, reconstruction_loss_weight=0.0
  )
  g10, _ = _grads(
    trainer, images, labels, attention_loss_weight=1.0, reconstruction_loss_weight=0.0
  )
  g01, _ = _grads(
    trainer, images, labels, attention_loss_weight=0.0, reconstruction_loss_weight=1.0
  )
  g23, _ = _grads(
    trainer, images, labels, attention_loss_weight=2.0, reconstruction_loss_weight=3.0
  )
  assert metrics["recon_loss"] > 0 and metrics["attn_loss"] > 0
  for a, b, c, d in zip(g00, g10, g01, g23):
    np.testing.assert_allclose(d, a + 2 * (b - a) + 3 * (c - a), rtol=1e-3, atol=1e-5)
  names = [v.path for v in trainer.model.trainable_variables]
  # With both weights 0, attention and autoencoder get no gradient (training.md §5.9).
  for name, g in zip(names, g00):
    if "attention" in name or "autoencoder" in name:
      assert not np.any(g), name
  assert any(np.any(g) for name, g in zip(names, g10) if "attention" in name)


def test_gradients_are_clipped_to_global_norm_ten(trainer_and_batch, monkeypatch):
  trainer, images, labels = trainer_and_batch
  big, _ = _grads(trainer, images, labels, reconstruction_loss_weight=1e5)
  monkeypatch.setattr(loop, "CLIP_NORM", 1e12)
  raw, _ = _grads(trainer, images, labels, reconstruction_loss_weight=1e5)
  raw_norm = np.sqrt(sum(float(np.sum(g**2)) for g in raw))
  assert raw_norm > 10
  clipped_norm = np.sqrt(sum(float(np.sum(g**2)) for g in big))
  assert clipped_norm == pytest.approx(10.0, rel=1e-4)
  for g, r in zip(big, raw):
    np.testing.assert_allclose(g, r * (10.0 / raw_norm), rtol=1e-3, atol=1e-7)


# ---- KB-20: two replicas, one replica ---------------------------------------------------------


def test_two_replicas_give_the_update_of_one_replica(data_dir, tmp_path):
  """KB-20: with the same global batch, 2 replicas and 1 replica make the same step.

  Each replica gets the same 4 examples (so per-replica BatchNorm statistics equal the
  global ones). Without clipping the steps must be equal; the reference's per-replica
  reconstruction mean would weigh that loss twice on 2 replicas. With a clip norm far below
  the gradients' norm every replica's gradient is clipped before the sum (KB-21, kept), so
  2 replicas step exactly twice as far.
  """
  code = textwrap.dedent(
    f"""
    import json, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from delf.training import distribution, loop
    from delf.training.config import TrainingConfig
    config = TrainingConfig(
        logdir={str(tmp_path)!r}, train_file_pattern={f"{data_dir}/train-*"!r},
        validation_file_pattern={f"{data_dir}/validation-*"!r}, batch_size=8, image_size=64,
        block_counts=(1, 1, 1, 1), width_factor=1 / 16, local_feature_map_channels=64,
        autoencoder_dimensions=16, max_iters=10, use_augmentation=False,
        initial_lr=0.05).resolved()
    two = loop._Trainer(config, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    one = loop._Trainer(config, tf.distribute.OneDeviceStrategy("/cpu:0"))
    images, labels, _ = next(one.train_iterator)
    images = tf.concat([images[:4], images[:4]], 0)
    labels = tf.concat([labels[:4], labels[:4]], 0)
    for t in (two, one):
      with t.strategy.scope():
        t.model.global_and_local_forward_pass(images[:1], training=False)
    start = [v.numpy() for v in one.model.variables]
    trainable_start = [v.numpy() for v in one.model.trainable_variables]
    results = {{}}
    for clip in (1e9, 1.0):
      loop.CLIP_NORM = clip  # read when the step is traced, just below
      metrics, steps = [], []
      for t in (two, one):
        train_step = tf.function(t._distributed_train_step)
        for v, value in zip(t.model.variables, start):
          v.assign(value)
        for v in t.optimizer.variables:
          v.assign(tf.zeros_like(v))
        t._set_learning_rate(0)
        m, *_ = train_step(
            distribution.distribute(t.strategy, images, 8),
            distribution.distribute(t.strategy, labels, 8))
        metrics.append({{k: float(v) for k, v in m.items()}})
        steps.append(
            [v.numpy() - s for v, s in zip(t.model.trainable_variables, trainable_start)])
      results[str(clip)] = {{
          "metrics": metrics,
          "max_step": max(float(np.max(np.abs(b))) for b in steps[1]),
          "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(*steps)),
          "max_diff_half": max(float(np.max(np.abs(a / 2 - b))) for a, b in zip(*steps)),
      }}
    print("RESULT", json.dumps({{"replicas": [two.replicas, one.replicas], **results}}))
    """
  )
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env["PYTHONPATH"] = (
    str(mf.__file__).rsplit("/tests/", 1)[0] + os.pathsep + env.get("PYTHONPATH", "")
  )
  proc = subprocess.run(
    [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  import json

  result = json.loads(proc.stdout.split("RESULT ", 1)[1])
  assert result["replicas"] == [2, 1]
  unclipped, clipped = result["1000000000.0"], result["1.0"]
  print(json.dumps(result))
  two, one = unclipped["metrics"]
  for key in ("desc_loss", "attn_loss", "recon_loss", "desc_correct", "attn_correct"):
    assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
  assert one["recon_loss"] > 0.01  # the autoencoder term takes part
  assert unclipped["max_step"] > 1e-3  # the step did move the weights
  assert unclipped["max_diff"] < 1e-3 * unclipped["max_step"]
  assert clipped["max_diff_half"] < 1e-2 * clipped["max_step"]  # KB-21: clipped per replica
