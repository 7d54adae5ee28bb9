"""Distributed training and crash safety, in subprocesses (TF device setup is per process).

* MirroredStrategy over 2 logical CPUs (must be configured before TF initialises devices).
* MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 (TF_CONFIG).
* kill -9 of the real train.py during a checkpoint write leaves the previous checkpoint as
  the latest, readable, and the next run resumes from it (the logdir lock does not stay).
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


def _env(quiet_by_default: bool = False) -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  if quiet_by_default:  # the scripts' own start-up handling (delf.tf_startup)
    del env["TF_CPP_MIN_LOG_LEVEL"]
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
    env = _env(quiet_by_default=True)
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


def test_kill_during_checkpoint_write_keeps_latest_readable(data_dir, tmp_path):
  """kill -9 of the real train.py while it writes a checkpoint (it saves every step here)."""
  logdir = tmp_path / "log"
  ckpt_dir = logdir / "delf_tf2-ckpt"
  args = [
    sys.executable,
    "-m",
    "scripts.train",
    *[f for f in TINY_FLAGS if not f.startswith("--max_iters")],
    f"--train_file_pattern={data_dir}/train-*",
    f"--validation_file_pattern={data_dir}/validation-*",
    f"--logdir={logdir}",
    "--max_iters=1000",
    "--save_interval=1",
    "--eval_interval=1000",
  ]
  proc = subprocess.Popen(
    args, cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  mid_write = False
  try:
    deadline = time.monotonic() + 240
    complete = 0
    while time.monotonic() < deadline and proc.poll() is None:
      names = os.listdir(ckpt_dir) if ckpt_dir.is_dir() else []
      complete = sum(n.endswith(".index") for n in names)
      # TensorFlow writes ckpt-N_temp/ first and renames it at the end of the write.
      if complete >= 2 and any(n.endswith("_temp") for n in names):
        mid_write = True
        break
      time.sleep(0.0005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert complete >= 2, "train.py wrote no checkpoint in time"
  import tensorflow as tf

  latest = tf.train.latest_checkpoint(str(ckpt_dir))
  assert latest is not None
  step = int(latest.rsplit("-", 1)[1])
  reader = tf.train.load_checkpoint(latest)
  assert all(
    np.all(np.isfinite(reader.get_tensor(k)))
    for k, dtype in reader.get_variable_to_dtype_map().items()
    if k.startswith("model/") and dtype.is_floating
  )
  weights = tf.train.load_checkpoint(str(logdir / "delf_weights"))  # what the exports read
  kernel = weights.get_tensor("model/backbone/conv1/_kernel/.ATTRIBUTES/VARIABLE_VALUE")
  assert np.all(np.isfinite(kernel))
  # The next run resumes from that checkpoint: neither the files nor the lock block it.
  resumed = subprocess.run(
    [*args[:-3], f"--max_iters={step + 1}", "--save_interval=1000"],
    cwd=REPO_ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resumed from {latest} at step {step}" in resumed.stdout
  assert f"step {step + 1}/{step + 1}" in resumed.stdout
  print(f"killed mid-write: {mid_write}")
