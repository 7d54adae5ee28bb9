"""On-disk training artefacts: the managed checkpoints, ``delf_weights`` and ``model_config.json``.

Layout of a logdir (INTERFACES.md):

* ``delf_tf2-ckpt/ckpt-<step>.{index,data-*}`` + ``checkpoint``: model, optimizer
  (step, learning rate, momentum slots) and the train input iterator (KB-25),
  managed by ``tf.train.CheckpointManager`` (max_to_keep 10, one kept every 3 h).
  The manager writes the ``checkpoint`` index file only after the checkpoint files,
  so a crash mid-write leaves the previous latest checkpoint readable.
* ``delf_weights.{index,data-*}``: the model only (``tf.train.Checkpoint(model=...)``),
  written under a temporary prefix and renamed into place; read by the export scripts.
* ``model_config.json``: ``{"model_class", "config", "format_version": 1}``.
"""

from __future__ import annotations

import glob
import json
import os
import uuid

import tensorflow as tf

from delf import atomic_io

CHECKPOINT_SUBDIR = "delf_tf2-ckpt"
WEIGHTS_PREFIX = "delf_weights"
MODEL_CONFIG_FILENAME = "model_config.json"
TRAINING_CONFIG_FILENAME = "training_config.json"
FORMAT_VERSION = 1


def model_class_of(model) -> str:
  return type(model).model_class_name


def write_model_weights(model, logdir: str) -> str:
  """Writes ``<logdir>/delf_weights`` (model variables only) and returns the prefix.

  The files are written under a temporary prefix and renamed, data files first
  and the ``.index`` last, so readers never see a half-written file.
  """
  final_prefix = os.path.join(logdir, WEIGHTS_PREFIX)
  tmp_prefix = os.path.join(logdir, f".{WEIGHTS_PREFIX}.tmp-{uuid.uuid4().hex[:8]}")
  try:
    tf.train.Checkpoint(model=model).write(tmp_prefix)
    written = sorted(glob.glob(glob.escape(tmp_prefix) + ".*"))
    for old in glob.glob(glob.escape(final_prefix) + ".data-*"):
      if old.replace(final_prefix, tmp_prefix, 1) not in written:
        os.remove(old)
    for path in sorted(written, key=lambda p: p.endswith(".index")):
      os.replace(path, final_prefix + path[len(tmp_prefix) :])
  finally:
    for leftover in glob.glob(glob.escape(tmp_prefix) + ".*"):
      os.remove(leftover)
  return final_prefix


def model_config_dict(model) -> dict:
  return {
    "model_class": model_class_of(model),
    "config": model.get_config(),
    "format_version": FORMAT_VERSION,
  }


def write_model_config(model, logdir: str) -> str:
  """Writes ``<logdir>/model_config.json`` atomically and returns its path."""
  path = os.path.join(logdir, MODEL_CONFIG_FILENAME)
  atomic_io.write_text_atomic(path, json.dumps(model_config_dict(model), indent=2) + "\n")
  return path


def read_model_config(path: str) -> dict:
  """Reads ``model_config.json`` (a file or the logdir holding it).

  Raises:
    ValueError: one line naming the file and the problem.
  """
  if os.path.isdir(path):
    path = os.path.join(path, MODEL_CONFIG_FILENAME)
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{path}: model config not found") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  if data.get("model_class") not in ("Delf", "Delg") or not isinstance(data.get("config"), dict):
    raise ValueError(f"{path}: expected keys model_class (Delf|Delg) and config")
  if data.get("format_version") != FORMAT_VERSION:
    raise ValueError(
      f"{path}: unsupported format_version {data.get('format_version')!r} "
      f"(expected {FORMAT_VERSION})"
    )
  return data


def model_from_config(data: dict, **overrides):
  """Builds a ``Delf``/``Delg`` from a ``model_config.json`` dict; ``overrides`` replace keys.

  e.g. ``model_from_config(data, num_classes=None)`` for an export model without heads.
  """
  from delf.model.delf_model import Delf, Delg

  cls = {"Delf": Delf, "Delg": Delg}[data["model_class"]]
  return cls.from_config({**data["config"], **overrides})


def load_trained_model(logdir: str, **overrides):
  """Rebuilds the model of ``logdir`` and reads ``delf_weights`` into it (heads dropped by default).

  Raises:
    ValueError: the config or the weights are missing, or a model variable is not
      in the checkpoint (names the first one).
  """
  overrides.setdefault("num_classes", None)
  model = model_from_config(read_model_config(logdir), **overrides)
  prefix = os.path.join(logdir, WEIGHTS_PREFIX)
  if not os.path.exists(prefix + ".index"):
    raise ValueError(f"{prefix}: no delf_weights checkpoint (expected {prefix}.index)")
  status = tf.train.Checkpoint(model=model).read(prefix)
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise ValueError(f"{prefix}: checkpoint does not match the model ({str(e)[:300]})") from None
  status.expect_partial()
  return model
