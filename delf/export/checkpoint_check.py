"""Checkpoint loading that refuses silent partial restores (KB-30, KB-31).

The reference restored lazily, so export flags that did not match training
(autoencoder, DELG head, sizes) only produced "Unresolved object in checkpoint"
warnings and an export with random layers. Here every variable the export uses
must be restored, and the checkpoint must not hold model parts the export
flags leave out: classifier heads and optimizer state may stay unused, a
global-only export may ignore the attention and autoencoder, a local-only
export the DELG global head. Otherwise one error lists what does not match and
the flags that probably differ; with the training ``model_config.json`` beside
the checkpoint it names the exact flag values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import tensorflow as tf

from delf.export.configs import (
  DEFAULT_CKPT_PATH,
  ExportConfig,
  GlobalExportConfig,
  LocalAndGlobalExportConfig,
  LocalExportConfig,
)

MODEL_CONFIG_FILENAME = "model_config.json"
"""Written by training beside ``delf_weights`` (INTERFACES.md)."""

# Checkpoint entries that no export needs (training-only state).
_TRAINING_ONLY_PREFIXES = ("model/desc_classification/", "model/attn_classification/")
# ... and those a global-only export may also leave unused.
_LOCAL_ONLY_PREFIXES = ("model/attention/", "model/autoencoder/")


class CheckpointMismatchError(ValueError):
  """The checkpoint does not hold the model the export flags describe (KB-31)."""


def check_checkpoint(ckpt_path: str) -> None:
  """KB-30: a missing checkpoint is a one-line error that says where training writes it."""
  if not tf.io.gfile.exists(ckpt_path + ".index"):
    hint = "pass --ckpt_path=<logdir>/delf_weights"
    candidate = os.path.join(ckpt_path, "delf_weights")
    if tf.io.gfile.isdir(ckpt_path) and tf.io.gfile.exists(candidate + ".index"):
      hint = f"did you mean --ckpt_path={candidate}?"
    raise FileNotFoundError(
      f"checkpoint {ckpt_path} not found (no {ckpt_path}.index); training writes "
      f"<logdir>/delf_weights (default {DEFAULT_CKPT_PATH}): {hint}"
    )


def read_training_model_config(ckpt_path: str) -> dict | None:
  """Returns ``<dirname(ckpt_path)>/model_config.json`` written by training, or None."""
  path = os.path.join(os.path.dirname(ckpt_path) or ".", MODEL_CONFIG_FILENAME)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: cannot read the training model config ({e})") from None
  if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
    raise ValueError(f"{path}: expected keys model_class and config")
  if data.get("model_class") not in ("Delf", "Delg"):
    raise ValueError(f"{path}: model_class must be Delf or Delg, got {data.get('model_class')!r}")
  return data


def _flag(name: str, value) -> str:
  if isinstance(value, bool):
    return f"--{name}" if value else f"--no{name}"
  return f"--{name}={value:g}" if isinstance(value, float) else f"--{name}={value}"


def behaviour_mismatches(config: ExportConfig, training: dict) -> list[str]:
  """Flags that differ from training without changing the variables (warnings only).

  The reference allows them (e.g. a different GeM power at export), but they are
  usually accidents, so the export says so.
  """
  trained = training["config"]
  differing = []
  if isinstance(config, LocalExportConfig | LocalAndGlobalExportConfig):
    theirs = trained.get("block3_strides")
    if theirs is not None and config.block3_strides != theirs:
      differing.append(
        f"{_flag('block3_strides', config.block3_strides)} "
        f"(training used {_flag('block3_strides', bool(theirs))})"
      )
  uses_gem = getattr(config, "delg_global_features", False) and training["model_class"] == "Delg"
  theirs = trained.get("gem_power")
  if uses_gem and theirs is not None and config.delg_gem_power != theirs:
    differing.append(
      f"{_flag('delg_gem_power', config.delg_gem_power)} "
      f"(training used {_flag('delg_gem_power', float(theirs))})"
    )
  return differing


def flag_mismatches(config: ExportConfig, training: dict) -> list[str]:
  """Flags whose value differs from the training model config, as ``--flag=x (training: y)``.

  Only flags that change which variables the export model has are compared.
  """
  trained = training["config"]
  is_delg = training["model_class"] == "Delg"
  wanted: list[tuple[str, object, object]] = []
  if isinstance(config, GlobalExportConfig | LocalAndGlobalExportConfig):
    wanted.append(("delg_global_features", config.delg_global_features, is_delg))
    if config.delg_global_features and is_delg:
      wanted.append(
        (
          "delg_embedding_layer_dim",
          config.delg_embedding_layer_dim,
          trained.get("embedding_layer_dim"),
        )
      )
  if isinstance(config, LocalExportConfig | LocalAndGlobalExportConfig):
    use_ae = bool(trained.get("use_dim_reduction"))
    wanted.append(("use_autoencoder", config.use_autoencoder, use_ae))
    if config.use_autoencoder and use_ae:
      wanted.append(
        ("autoencoder_dimensions", config.autoencoder_dimensions, trained.get("reduced_dimension"))
      )
      wanted.append(
        (
          "local_feature_map_channels",
          config.local_feature_map_channels,
          trained.get("dim_expand_channels"),
        )
      )
  return [
    f"{_flag(name, ours)} (training used {_flag(name, theirs)})"
    for name, ours, theirs in wanted
    if theirs is not None and ours != theirs
  ]


def _generic_flag_hint(missing: Sequence[str], unused: Sequence[str]) -> list[str]:
  names = " ".join([*missing, *unused])
  hints = []
  if "autoencoder" in names:
    hints += ["--use_autoencoder", "--autoencoder_dimensions", "--local_feature_map_channels"]
  if "embedding" in names:
    hints += ["--delg_global_features", "--delg_embedding_layer_dim"]
  return hints or [
    "--use_autoencoder",
    "--autoencoder_dimensions",
    "--local_feature_map_channels",
    "--delg_global_features",
    "--delg_embedding_layer_dim",
  ]


def mismatch_message(
  ckpt_path: str,
  problems: Sequence[str],
  config: ExportConfig,
  training: dict | None,
  missing=(),
  unused=(),
) -> str:
  if training is not None:
    differing = flag_mismatches(config, training)
    knobs = (
      ", ".join(differing) if differing else "none of the export flags (see model_config.json)"
    )
    hint = f"flags that differ from {MODEL_CONFIG_FILENAME}: {knobs}"
  else:
    hint = "flags that probably differ from training: " + ", ".join(
      _generic_flag_hint(missing, unused)
    )
  return (
    f"checkpoint {ckpt_path} does not match the model built from the export flags: "
    + "; ".join(problems)
    + f"; {hint}"
  )


def _list(names: Sequence[str], limit: int = 8) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _restored_variables(status, variables) -> tuple[list[str], list[str]]:
  """Returns (model variables not restored, checkpoint variable keys not used)."""
  # The load status knows which checkpoint nodes were bound to which objects;
  # TensorFlow exposes that only through these internals (present in TF 2.21); without
  # them the public assertion below still catches missing variables.
  checkpoint = getattr(status, "_checkpoint", None)
  if checkpoint is None or not hasattr(checkpoint, "object_by_proto_id"):
    try:
      status.assert_existing_objects_matched()
    except AssertionError as e:
      return [str(e).splitlines()[0]], []
    return [], []
  bound = list(checkpoint.object_by_proto_id.items())
  bound_ids = {id(obj) for _, obj in bound}
  missing = [v.path for v in variables if id(v) not in bound_ids]
  nodes = checkpoint.object_graph_proto.nodes
  used_keys = {
    attribute.checkpoint_key for node_id, _ in bound for attribute in nodes[node_id].attributes
  }
  all_keys = {attribute.checkpoint_key for node in nodes for attribute in node.attributes}
  unused = sorted(key.split("/.ATTRIBUTES")[0] for key in all_keys - used_keys)
  return missing, unused


def _is_global_head(key: str) -> bool:
  """DELG's embedding layer (``model/backbone/embedding*/...``): unused by local-only exports."""
  parts = key.split("/")
  return len(parts) > 2 and parts[1] == "backbone" and "embedding" in parts[2]


def checkpoint_backbone(ckpt_path: str) -> tuple[tuple[int, ...], float] | None:
  """``(block_counts, width_factor)`` of the backbone stored in ``ckpt_path``, or None.

  Read from the variable names (``model/backbone/l<stage><letter>/...``) and the stem
  convolution's output channels (64 in ResNet-50).
  """
  try:
    shapes = tf.train.load_checkpoint(ckpt_path).get_variable_to_shape_map()
  except (tf.errors.OpError, ValueError):
    return None
  blocks: dict[int, set[str]] = {}
  stem = None
  for key, shape in shapes.items():
    parts = key.split("/")
    if len(parts) < 3 or parts[:2] != ["model", "backbone"]:
      continue
    layer = parts[2]
    if layer == "conv1" and key.endswith("_kernel/.ATTRIBUTES/VARIABLE_VALUE"):
      stem = shape[-1]
    elif len(layer) == 3 and layer[0] == "l" and layer[1] in "2345" and layer[2].isalpha():
      blocks.setdefault(int(layer[1]), set()).add(layer[2])
  if stem is None or sorted(blocks) != [2, 3, 4, 5]:
    return None
  return tuple(len(blocks[s]) for s in (2, 3, 4, 5)), stem / 64


def _backbone_mismatch(ckpt_path: str, model) -> str | None:
  """A message when the checkpoint's backbone is not the one built for the export."""
  stored = checkpoint_backbone(ckpt_path)
  backbone = getattr(model, "backbone", None)
  if stored is None or backbone is None:
    return None
  counts, width = stored
  built = (tuple(backbone.block_counts), backbone.width_factor)
  if counts == built[0] and abs(width - built[1]) < 1e-6:
    return None
  config_path = os.path.join(os.path.dirname(ckpt_path) or ".", MODEL_CONFIG_FILENAME)
  return (
    f"checkpoint {ckpt_path} holds a backbone with block counts {list(counts)} and width "
    f"factor {width:g}, but the export built {list(built[0])} / {built[1]:g}: the backbone "
    f"size is not an export flag, it is read from {config_path} (missing or not from this "
    "training); copy the training logdir's model_config.json next to the checkpoint"
  )


def load_and_verify(
  model,
  ckpt_path: str,
  config: ExportConfig,
  training: dict | None,
  global_only: bool = False,
  local_only: bool = False,
) -> None:
  """Reads ``ckpt_path`` into ``model`` and fails unless it holds exactly the exported parts.

  A global-only export may ignore the checkpoint's attention and autoencoder,
  a local-only export its DELG global head; every export ignores classifier
  heads and optimizer state.
  """
  backbone_problem = _backbone_mismatch(ckpt_path, model)
  if backbone_problem:  # Not the autoencoder's or the head's fault: say so first.
    raise CheckpointMismatchError(backbone_problem)
  checkpoint = tf.train.Checkpoint(model=model)
  try:
    status = checkpoint.read(ckpt_path)
  except (ValueError, tf.errors.InvalidArgumentError) as e:
    # Shapes differ (e.g. another autoencoder size): the restore itself fails.
    detail = str(e).splitlines()[0]
    raise CheckpointMismatchError(
      mismatch_message(ckpt_path, [detail], config, training, missing=[detail])
    ) from None
  scope = model.backbone if global_only else model
  missing, unused = _restored_variables(status, scope.variables)
  allowed = _TRAINING_ONLY_PREFIXES + (_LOCAL_ONLY_PREFIXES if global_only else ())
  unused = [
    k
    for k in unused
    if k.startswith("model/")
    and not (k + "/").startswith(allowed)
    and not (local_only and _is_global_head(k))
  ]
  status.expect_partial()  # Silences TF's warnings about the entries we allow.
  problems = []
  if missing:
    problems.append(f"{len(missing)} model variables not in the checkpoint: {_list(missing)}")
  if unused:
    problems.append(f"{len(unused)} checkpoint variables the export would ignore: {_list(unused)}")
  if problems:
    raise CheckpointMismatchError(
      mismatch_message(ckpt_path, problems, config, training, missing, unused)
    )
