"""Distributed training and crash safety, in subprocesses (TF device setup is per process).

* MirroredStrategy over 2 logical CPUs (must be configured before TF initialises devices).
* MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 (TF_CONFIG).
* kill -9 during a checkpoint write leaves the previous checkpoint as the latest, readable.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests import model_fixtures as mf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = [
  "--batch_size=8",
  "--image_size=64",
  "--backbone_block_counts=1,1,1,1",
  "--backbone_width_factor=0.0625",
  "--local_feature_map_channels=64",
  "--autoencoder_dimensions=16",
  "--max_iters=2",
]


def _env() -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  env.pop("TF_CONFIG", None)
  return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("tiny_tfrecords_dist")
  mf.write_tiny_tfrecords(
    directory, train_per_class=4, validation_per_class=1, metadata_num_classes=4
  )
  return directory


def test_mirrored_strategy_two_logical_cpus(data_dir, tmp_path):
  code = textwrap.dedent(
    f"""
    import json, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from delf.training.config import TrainingConfig
    from delf.training.loop import train
    r = train(TrainingConfig(
        logdir={str(tmp_path)!r}, train_file_pattern={f"{data_dir}/train-*"!r},
        validation_file_pattern={f"{data_dir}/validation-*"!r}, batch_size=8, image_size=64,
        block_counts=(1, 1, 1, 1), width_factor=1 / 16, local_feature_map_channels=64,
        autoencoder_dimensions=16, max_iters=2, eval_interval=2, num_eval_batches=1))
    print("RESULT", json.dumps({{"final": r.final_step, "history": r.history,
                                 "validation": r.validation}}))
    """
  )
  proc = subprocess.run(
    [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=180
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.split("RESULT ", 1)[1])
  assert result["final"] == 2
  record = result["history"][-1]
  assert all(np.isfinite(record[k]) for k in ("loss/desc/crossentropy", "loss/recon/mse"))
  assert result["validation"][0]["step"] == 2
  training = json.loads((tmp_path / "training_config.json").read_text())
  assert training["num_replicas"] == 2
  assert (tmp_path / "delf_tf2-ckpt" / "ckpt-2.index").exists()


def _free_ports(n: int) -> list[int]:
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_multi_worker_mirrored_two_processes(data_dir, tmp_path):
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  logdir = tmp_path / "log"
  procs = []
  for index in range(2):
    env = _env()
    env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    args = [
      sys.executable,
      "-m",
      "scripts.train",
      *TINY_FLAGS,
      f"--train_file_pattern={data_dir}/train-*",
      f"--validation_file_pattern={data_dir}/validation-*",
      f"--logdir={logdir}",
      "--strategy=multi_worker_mirrored",
    ]
    procs.append(
      subprocess.Popen(
        args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
      )
    )
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=240)[0])
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-3000:]
    assert "Finished training" in output
  # Both workers log the same (all-reduced) losses: they stay in sync.
  lines = [re.search(r"step 2/2: loss desc (\S+) attn (\S+)", out).groups() for out in outputs]
  assert lines[0] == lines[1]
  training = json.loads((logdir / "training_config.json").read_text())
  assert training["num_replicas"] == 2
  assert (logdir / "delf_tf2-ckpt" / "ckpt-2.index").exists()
  assert (logdir / "delf_weights.index").exists()
  assert not (logdir / ".worker_tmp_1").exists()


def test_kill_during_checkpoint_write_keeps_latest_readable(tmp_path):
  directory = str(tmp_path / "ckpt")
  code = textwrap.dedent(
    f"""
    import tensorflow as tf
    v = tf.Variable(tf.zeros([96 * 1024 * 1024]))  # 384 MB: the write takes a while
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=v), {directory!r}, max_to_keep=10)
    v.assign(tf.ones_like(v))
    manager.save(checkpoint_number=1)
    print("saved 1", flush=True)
    v.assign(2 * tf.ones_like(v))
    manager.save(checkpoint_number=2)
    print("saved 2", flush=True)
    """
  )
  proc = subprocess.Popen(
    [sys.executable, "-c", code], env=_env(), stdout=subprocess.PIPE, text=True
  )
  try:
    assert proc.stdout.readline().strip() == "saved 1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
      if any("ckpt-2" in name for _, _, files in os.walk(directory) for name in files):
        break
      time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  import tensorflow as tf

  latest = tf.train.latest_checkpoint(directory)
  assert latest is not None
  number = int(latest.rsplit("-", 1)[1])
  value = tf.train.load_checkpoint(latest).get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")
  assert value.shape == (96 * 1024 * 1024,)
  assert float(value.min()) == float(value.max()) == float(number)
