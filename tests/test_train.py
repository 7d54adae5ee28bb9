"""End-to-end tests of scripts/train.py and delf.training (training.md §6, KB-10/15/16/20/22–25).

All runs use the tiny backbone at 64 px on a 4-class TFRecord set made of crops of
real photos (tests.model_fixtures.write_tiny_tfrecords).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from delf.training import checkpoints
from delf.training.config import TrainingConfig
from delf.training.loop import (
  TrainingError,
  label_error_message,
  resolve_num_classes,
  should_report,
  should_save,
  should_validate,
  train,
)
from tests import cli_harness
from tests import model_fixtures as mf

TINY_FLAGS = [
  "--batch_size=8",
  "--image_size=64",
  "--backbone_block_counts=1,1,1,1",
  "--backbone_width_factor=0.0625",
  "--local_feature_map_channels=64",
  "--delg_embedding_layer_dim=32",
  "--autoencoder_dimensions=16.0",  # KB-18: integral floats accepted.
]


def run_script(name: str, args: list[str]):
  return cli_harness.run_script(name, args)


def run_train(args: list[str]) -> int:
  return run_script("train", args)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("tiny_tfrecords")
  mf.write_tiny_tfrecords(directory, metadata_num_classes=4)
  return directory


def data_flags(directory) -> list[str]:
  return [
    f"--train_file_pattern={directory}/train-*",
    f"--validation_file_pattern={directory}/validation-*",
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
    "delg_embedding_layer_dim": 32,
  }
  kwargs.update(overrides)
  return TrainingConfig(**kwargs)


def event_tags(logdir) -> dict[str, list[int]]:
  tags: dict[str, list[int]] = {}
  for path in glob.glob(os.path.join(logdir, "train_logs", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  return tags


@pytest.mark.parametrize(
  "model_flags,model_class,local_dim",
  [
    ([], "Delf", 16),  # DELF with the autoencoder (default on)
    (["--delg_global_features", "--nouse_autoencoder"], "Delg", 64),
  ],
)
def test_train_cli_artifacts(data_dir, tmp_path, capsys, model_flags, model_class, local_dim):
  logdir = tmp_path / "logdir"
  rc = run_train(
    [*TINY_FLAGS, *data_flags(data_dir), f"--logdir={logdir}", "--max_iters=3", *model_flags],
  )
  assert rc == 0
  out = capsys.readouterr().out
  assert "num_classes = 4 (from dataset_metadata.json" in out
  assert "step 3/3: loss desc" in out and "images/s" in out and "ETA" in out
  assert "Finished training" in out
  # Checkpoint number = step; delf_weights + model_config.json for export.
  assert tf.train.latest_checkpoint(str(logdir / "delf_tf2-ckpt")).endswith("ckpt-3")
  config = json.loads((logdir / "model_config.json").read_text())
  assert config["model_class"] == model_class and config["config"]["num_classes"] == 4
  training = json.loads((logdir / "training_config.json").read_text())
  assert training["num_classes"] == 4 and training["config"]["max_iters"] == 3
  model = checkpoints.load_trained_model(str(logdir))
  out = model.build_call(tf.zeros([1, 64, 64, 3]))
  assert out["local_features"].shape[-1] == local_dim
  tags = event_tags(logdir)
  expected = {
    "learning_rate",
    "loss/desc/crossentropy",
    "loss/attn/crossentropy",
    "train_accuracy/desc",
    "train_accuracy/attn",
    "global_steps_per_sec",
    "batch_images",
    "batch_attention",
    "image_range/max",
    "image_range/min",
    "attention/max",
    "attention/min",
    "attention/mean",
    "attention/percent_25",
    "attention/percent_50",
    "attention/percent_75",
    *(f"sparsity/{k}" for k in ("block0", "block0mp", "block1", "block2", "block3", "block4")),
  }
  assert expected <= set(tags)
  assert ("loss/recon/mse" in tags) == (model_class == "Delf")
  assert ("desc/scale_factor" in tags) == (model_class == "Delg")
  assert tags["learning_rate"] == [3]


def test_resume_continues_step_learning_rate_and_data_stream(data_dir, tmp_path):
  from delf.data.pipeline import create_dataset

  config = tiny_config(data_dir, tmp_path, max_iters=2, use_augmentation=False, seed=3)
  first = train(config)
  assert (first.start_step, first.final_step) == (0, 2)
  second = train(dataclasses.replace(config, max_iters=4))
  assert (second.start_step, second.final_step) == (2, 4)
  # LR linear decay uses the restored step: 0.01 * (1 - 3/4) at the last step.
  assert second.history[-1]["learning_rate"] == pytest.approx(0.0025)
  # KB-22: train accuracy is a mean over the report interval (steps 3 and 4 here).
  assert second.history[-1]["interval_examples"] == 16
  stream = create_dataset(
    config.train_file_pattern, image_size=64, batch_size=8, seed=3, include_ids=True
  )
  batches = [[i.decode() for i in ids.numpy()] for _, _, ids in stream.take(3)]
  assert first.first_batch_ids == batches[0]
  assert second.first_batch_ids == batches[2]  # KB-25: not batches[0] again
  ckpts = sorted(os.path.basename(p) for p in glob.glob(f"{tmp_path}/delf_tf2-ckpt/*.index"))
  assert ckpts == ["ckpt-2.index", "ckpt-4.index"]
  assert train(config).final_step == 4  # nothing to do, no crash


def _checkpoint_values(logdir) -> dict[str, np.ndarray]:
  """Every variable of the latest checkpoint (model, optimizer slots, step)."""
  path = tf.train.latest_checkpoint(str(logdir / "delf_tf2-ckpt"))
  reader = tf.train.load_checkpoint(path)
  return {
    name: reader.get_tensor(name)
    for name, _ in tf.train.list_variables(path)
    if "VARIABLE_VALUE" in name and "train_iterator" not in name
  }


def test_deterministic_runs_give_identical_losses_and_weights(data_dir, tmp_path, capsys):
  from delf.training.loop import op_determinism_enabled

  runs = []
  for name in ("a", "b"):
    config = tiny_config(
      data_dir,
      tmp_path / name,
      max_iters=3,
      seed=5,
      deterministic=True,
      delg_global_features=True,
      report_interval=1,
    )
    result = train(config)
    losses = [
      (h["loss/desc/crossentropy"], h["loss/attn/crossentropy"], h["loss/recon/mse"])
      for h in result.history
    ]
    runs.append((losses, _checkpoint_values(tmp_path / name)))
    assert not op_determinism_enabled()  # switched off again after the run
  assert len(runs[0][0]) == 3 and runs[0][0] == runs[1][0]  # bit-identical losses
  first, second = runs[0][1], runs[1][1]
  assert len(first) > 20 and first.keys() == second.keys()
  assert any("backbone" in name for name in first)
  for name in first:
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)

  # The flag reaches the run through train.py, and --seed then also seeds the weights.
  capsys.readouterr()
  other = tmp_path / "seed6"
  rc = run_train(
    [
      *TINY_FLAGS,
      *data_flags(data_dir),
      f"--logdir={other}",
      "--max_iters=3",
      "--delg_global_features",
      "--deterministic",
      "--seed=6",
    ]
  )
  assert rc == 0
  assert "Deterministic run: seed 6, TensorFlow op determinism on" in capsys.readouterr().out
  assert json.loads((other / "training_config.json").read_text())["config"]["deterministic"]
  third = _checkpoint_values(other)
  differing = [n for n in first if not np.array_equal(first[n], third[n])]
  assert len(differing) > len(first) // 2


def test_resume_with_other_model_flags_is_refused(data_dir, tmp_path):
  config = tiny_config(data_dir, tmp_path, max_iters=1, use_autoencoder=False)
  train(config)
  with pytest.raises(TrainingError, match=r"different model.*use_dim_reduction"):
    train(dataclasses.replace(config, max_iters=2, use_autoencoder=True))


def test_out_of_range_label_stops_with_one_line_error(tmp_path, capsys):
  data = tmp_path / "data"
  mf.write_tiny_tfrecords(data, train_per_class=2, label_overrides={"train_2_1": 7})
  rc = run_train(
    [
      *TINY_FLAGS,
      *data_flags(data),
      f"--logdir={tmp_path}/log",
      "--max_iters=20",
      "--num_classes=4",
    ],
  )
  assert rc == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1
  message = err[0]
  for part in ("label 7", "'train_2_1'", "[0, 4)", "--num_classes", "--dataset_version=gld_v1"):
    assert part in message
  assert not glob.glob(f"{tmp_path}/log/delf_tf2-ckpt/ckpt-20*")


def test_label_error_suggests_dataset_version():
  message = label_error_message(20000, "abc", "train", 14951, "--dataset_version=gld_v1", "gld_v1")
  assert "use --dataset_version=gld_v2_clean" in message and "'abc'" in message
  assert "corrupt" in label_error_message(-1, "x", "train", 10, "--num_classes", "gld_v1")


def test_num_classes_resolution_order(tmp_path):
  plain = tmp_path / "plain"
  mf.write_tiny_tfrecords(plain, train_per_class=1, validation_per_class=1)
  with_meta = tmp_path / "meta"
  mf.write_tiny_tfrecords(
    with_meta, train_per_class=1, validation_per_class=1, metadata_num_classes=9
  )

  def resolve(directory, **kw):
    return resolve_num_classes(TrainingConfig(train_file_pattern=f"{directory}/train-*", **kw))

  assert resolve(with_meta, num_classes=5) == (5, "--num_classes")
  assert resolve(with_meta, dataset_version="gld_v2")[0] == 9
  assert resolve(plain, dataset_version="gld_v2_clean") == (81313, "--dataset_version=gld_v2_clean")
  assert resolve(plain)[0] == 14951


def test_non_finite_loss_stops_and_last_checkpoint_is_intact(data_dir, tmp_path):
  config = tiny_config(data_dir, tmp_path, max_iters=50, initial_lr=1e30, save_interval=1)
  with pytest.raises(TrainingError, match=r"non-finite loss at step (\d+)") as info:
    train(config)
  step = int(re.search(r"step (\d+)", str(info.value)).group(1))
  assert "last checkpoint" in str(info.value)
  latest = tf.train.latest_checkpoint(str(tmp_path / "delf_tf2-ckpt"))
  assert latest.endswith(f"ckpt-{step - 1}")
  reader = tf.train.load_checkpoint(latest)
  for name in reader.get_variable_to_shape_map():
    if name.startswith("model/"):
      assert np.all(np.isfinite(reader.get_tensor(name))), name


def test_imagenet_init_without_extra_step(data_dir, tmp_path, capsys):
  model = mf.make_tiny_model("Delf")
  h5 = str(tmp_path / "imagenet.h5")
  written = mf.write_imagenet_h5(model.backbone, h5)
  logdir = tmp_path / "log"
  rc = run_train(
    [
      *TINY_FLAGS,
      *data_flags(data_dir),
      f"--logdir={logdir}",
      "--max_iters=1",
      f"--imagenet_checkpoint={h5}",
      "--initial_lr=0",
      "--nouse_autoencoder",
    ],
  )
  assert rc == 0
  assert "Loaded 34 backbone layers" in capsys.readouterr().out
  assert tf.train.latest_checkpoint(str(logdir / "delf_tf2-ckpt")).endswith("ckpt-1")
  reader = tf.train.load_checkpoint(str(logdir / "delf_weights"))
  np.testing.assert_array_equal(
    reader.get_tensor("model/backbone/conv1/_kernel/.ATTRIBUTES/VARIABLE_VALUE"),
    written["conv1"][0],
  )
  np.testing.assert_array_equal(
    reader.get_tensor("model/backbone/l4a/conv2b/_kernel/.ATTRIBUTES/VARIABLE_VALUE"),
    written["res4a_branch2b"][0],
  )
  assert reader.get_tensor("model/backbone/bn_conv1/gamma/.ATTRIBUTES/VARIABLE_VALUE").tolist() == (
    written["bn_conv1"][0].tolist()
  )


def test_learning_on_an_easy_four_class_set(data_dir, tmp_path):
  config = tiny_config(
    data_dir,
    tmp_path,
    max_iters=40,
    initial_lr=0.02,
    use_autoencoder=False,
    use_augmentation=False,
    report_interval=1,
    eval_interval=40,
    num_eval_batches=1,
  )
  result = train(config)
  desc = [h["loss/desc/crossentropy"] for h in result.history]
  accuracy = [h["train_accuracy/desc"] for h in result.history]
  assert np.mean(desc[-5:]) < 0.5 * np.mean(desc[:3])
  assert np.mean(accuracy[-10:]) > 0.5  # chance is 0.25
  validation = result.validation[-1]
  assert set(validation) >= {"validation/desc", "validation/attn", "validation_loss/desc"}
  tags = event_tags(tmp_path)
  assert {
    "validation/desc",
    "validation/attn",
    "validation_loss/desc",
    "validation_loss/attn",
  } <= set(tags)


def test_debug_overrides():
  config = TrainingConfig(debug=True, batch_size=64, max_iters=7).resolved()
  assert (config.batch_size, config.max_iters, config.num_eval_batches) == (4, 100, 1)
  assert (config.save_interval, config.report_interval) == (1, 10)
  assert TrainingConfig(batch_size=32).resolved().num_eval_batches == 1562
  # KB-22: with 100 debug steps and eval_interval 1000, validation still runs at the end.
  assert config.eval_interval == 1000
  assert [s for s in range(1, 101) if should_validate(s, config)] == [100]
  assert all(should_save(s, config) for s in range(1, 101))
  assert [s for s in range(1, 101) if should_report(s, config)] == list(range(10, 101, 10))
  normal = TrainingConfig(max_iters=2500).resolved()
  assert [s for s in range(1, 2501) if should_validate(s, normal)] == [1000, 2000]
  assert [s for s in range(1, 2501) if should_save(s, normal)] == [1000, 2000, 2500]


@pytest.mark.parametrize(
  "flags", [["--jit_compile", "--mixed_precision=bf16"], ["--mixed_precision=fp16"]]
)
def test_mixed_precision_and_jit(data_dir, tmp_path, capsys, flags):
  logdir = tmp_path / "log"
  rc = run_train(
    [
      *TINY_FLAGS,
      *data_flags(data_dir),
      f"--logdir={logdir}",
      "--max_iters=2",
      "--delg_global_features",
      *flags,
    ],
  )
  assert rc == 0
  assert "Finished training" in capsys.readouterr().out
  reader = tf.train.load_checkpoint(str(logdir / "delf_weights"))
  kernel = reader.get_tensor("model/backbone/conv1/_kernel/.ATTRIBUTES/VARIABLE_VALUE")
  assert kernel.dtype == np.float32 and np.all(np.isfinite(kernel))
  import keras

  assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards


def test_demo_data_build_then_train(tmp_path, capsys):
  """Demo photos -> build_image_dataset (clean CSV, split) -> train; class count from metadata."""
  from delf.data import demo

  info = demo.make_demo_dataset(
    tmp_path / "gldv2", num_landmarks=4, images_per_landmark=4, image_size=(96, 128)
  )
  del info
  records = tmp_path / "tfrecord"
  run_script(
    "build_image_dataset",
    [
      f"--train_csv_path={tmp_path}/gldv2/train/train.csv",
      f"--train_clean_csv_path={tmp_path}/gldv2/train/train_clean.csv",
      f"--train_directory={tmp_path}/gldv2/train/*/*/*/",
      f"--output_directory={records}",
      "--num_shards=2",
      "--generate_train_validation_splits",
      "--validation_split_size=0.25",
      "--num_workers=1",
    ],
  )
  logdir = tmp_path / "log"
  rc = run_train(
    [
      *TINY_FLAGS,
      *data_flags(records),
      f"--logdir={logdir}",
      "--max_iters=2",
      "--dataset_version=gld_v2_clean",
    ]
  )
  assert rc == 0
  out = capsys.readouterr().out
  assert "num_classes = 4 (from dataset_metadata.json" in out
  assert json.loads((logdir / "model_config.json").read_text())["config"]["num_classes"] == 4
  assert (logdir / "delf_weights.index").exists()


def test_reconstruction_loss_is_a_global_batch_mean():
  from delf.training import losses

  block3 = tf.random.stateless_normal([4, 2, 2, 3], seed=(1, 2))
  expanded = tf.random.stateless_normal([4, 2, 2, 3], seed=(3, 4))
  full = float(tf.reduce_mean(tf.square(block3 - expanded)))
  assert float(losses.reconstruction_loss(block3, expanded)) == pytest.approx(full)
  halves = [
    losses.reconstruction_loss(block3[i : i + 2], expanded[i : i + 2], num_replicas=2)
    for i in (0, 2)
  ]
  assert float(halves[0] + halves[1]) == pytest.approx(full, rel=1e-6)  # KB-20
  ce = losses.classification_loss(tf.constant([0, 1]), tf.constant([[2.0, 0.0], [0.0, 0.0]]), 4)
  assert float(ce) == pytest.approx((np.log(1 + np.exp(-2.0)) + np.log(2.0)) / 4, rel=1e-6)


def test_percentiles_without_tfp():
  from delf.training import summaries

  x = tf.constant(np.arange(101, dtype=np.float32)[::-1].reshape(1, 101, 1, 1))
  assert [float(summaries.percentile(x, q)) for q in (0, 25, 50, 75, 100)] == [0, 25, 50, 75, 100]
  stats = summaries.attention_statistics(tf.constant([[1.0, 2.0], [3.0, 4.0]]))
  assert float(stats["attention/percent_50"]) in (2.0, 3.0)
  assert float(stats["attention/mean"]) == 2.5
