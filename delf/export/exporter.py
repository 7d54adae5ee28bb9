"""Build the export model, load and verify the checkpoint, write the SavedModel (training.md §7).

Ours:
* KB-30: the default checkpoint is what training writes (``/tmp/delf/delf_weights``);
  a missing checkpoint is a one-line error saying so.
* KB-31: after loading, every variable the export uses must have been restored,
  and the checkpoint must not hold model parts the export flags leave out
  (classifier heads and optimizer state may stay unused; a global-only export
  may ignore the attention and autoencoder). Otherwise one error lists what
  does not match and the flags that probably differ; with the training
  ``model_config.json`` beside the checkpoint it names the exact flag values.
* The SavedModel is written to a temporary directory and renamed into place,
  and carries its own ``delf_export_config.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence

import tensorflow as tf
from absl import logging as absl_logging

from delf.export import modules
from delf.export.global_features import validate_pool_type
from delf.export.nms import validate_iou_threshold
from delf.export.receptive_field import BASE_STRIDE, PADDING, RECEPTIVE_FIELD, stride_factor

DEFAULT_CKPT_PATH = "/tmp/delf/delf_weights"
"""What training writes by default (``<logdir>/delf_weights`` with logdir ``/tmp/delf``)."""
MODEL_CONFIG_FILENAME = "model_config.json"
"""Written by training beside ``delf_weights`` (INTERFACES.md)."""
EXPORT_CONFIG_FILENAME = "delf_export_config.json"
"""Written into every export directory: how the SavedModel was made and what it returns."""
EXPORT_CONFIG_FORMAT_VERSION = 1

# Checkpoint entries that no export needs (training-only state).
_TRAINING_ONLY_PREFIXES = ("model/desc_classification/", "model/attn_classification/")
# ... and those a global-only export may also leave unused.
_LOCAL_ONLY_PREFIXES = ("model/attention/", "model/autoencoder/")


class CheckpointMismatchError(ValueError):
  """The checkpoint does not hold the model the export flags describe (KB-31)."""


@dataclasses.dataclass(frozen=True)
class LocalExportConfig:
  """Flags of ``export_local_model.py`` (training.md §7.6)."""

  export_path: str
  ckpt_path: str = DEFAULT_CKPT_PATH
  block3_strides: bool = True
  iou: float = 1.0
  use_autoencoder: bool = True
  autoencoder_dimensions: int = 128
  local_feature_map_channels: int = 1024


@dataclasses.dataclass(frozen=True)
class GlobalExportConfig:
  """Flags of ``export_global_model.py`` (training.md §7.7)."""

  export_path: str
  ckpt_path: str = DEFAULT_CKPT_PATH
  input_scales_list: tuple[float, ...] | None = None
  multi_scale_pool_type: str = "None"
  normalize_global_descriptor: bool = False
  delg_global_features: bool = False
  delg_gem_power: float = 3.0
  delg_embedding_layer_dim: int = 2048


@dataclasses.dataclass(frozen=True)
class LocalAndGlobalExportConfig:
  """Flags of ``export_local_and_global_model.py`` (training.md §7.8)."""

  export_path: str
  ckpt_path: str = DEFAULT_CKPT_PATH
  delg_global_features: bool = True
  delg_gem_power: float = 3.0
  delg_embedding_layer_dim: int = 2048
  block3_strides: bool = True
  iou: float = 1.0
  use_autoencoder: bool = True
  autoencoder_dimensions: int = 128
  local_feature_map_channels: int = 1024


ExportConfig = LocalExportConfig | GlobalExportConfig | LocalAndGlobalExportConfig


# ---------------------------------------------------------------------------- checks


def check_export_path(export_path: str) -> None:
  """Refuses to overwrite anything, like the reference (ValueError)."""
  if not export_path:
    raise ValueError("export_path is required")
  if os.path.lexists(export_path):
    raise ValueError(f"export_path {export_path} already exists; choose a new directory")


def check_flag_values(config: ExportConfig) -> None:
  """Rejects bad flag values before the (slow) model build."""
  if isinstance(config, GlobalExportConfig):
    validate_pool_type(config.multi_scale_pool_type)
    if config.input_scales_list is not None and not config.input_scales_list:
      raise ValueError("input_scales_list must contain at least one scale")
    if config.delg_embedding_layer_dim < 1:
      raise ValueError(
        f"delg_embedding_layer_dim must be >= 1, got {config.delg_embedding_layer_dim}"
      )
  else:
    validate_iou_threshold(config.iou)
    if isinstance(config, LocalAndGlobalExportConfig) and config.delg_embedding_layer_dim < 1:
      raise ValueError(
        f"delg_embedding_layer_dim must be >= 1, got {config.delg_embedding_layer_dim}"
      )


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


def _mismatch_message(
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
  # TensorFlow exposes that only through these (stable since TF 2.5) internals.
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
  checkpoint = tf.train.Checkpoint(model=model)
  try:
    status = checkpoint.read(ckpt_path)
  except (ValueError, tf.errors.InvalidArgumentError) as e:
    # Shapes differ (e.g. another autoencoder size): the restore itself fails.
    detail = str(e).splitlines()[0]
    raise CheckpointMismatchError(
      _mismatch_message(ckpt_path, [detail], config, training, missing=[detail])
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
      _mismatch_message(ckpt_path, problems, config, training, missing, unused)
    )


# ---------------------------------------------------------------------------- models


def _backbone_knobs(training: dict | None) -> dict:
  """Depth/width of the trained backbone (no flags exist for them)."""
  if training is None:
    return {}
  trained = training["config"]
  return {k: trained[k] for k in ("block_counts", "width_factor") if k in trained}


def build_export_model(config: ExportConfig, training: dict | None):
  """Builds the export model (no classifier heads) the flags describe."""
  from delf.model.delf_model import Delf, Delg

  knobs = _backbone_knobs(training)
  if isinstance(config, GlobalExportConfig):
    # KEEP (KB-35): block3 stride and autoencoder do not change global features.
    if config.delg_global_features:
      return Delg(
        block3_strides=False,
        name="DELG",
        gem_power=config.delg_gem_power,
        embedding_layer_dim=config.delg_embedding_layer_dim,
        num_classes=None,
        **knobs,
      )
    return Delf(block3_strides=False, name="DELF", num_classes=None, **knobs)
  local = {
    "block3_strides": config.block3_strides,
    "use_dim_reduction": config.use_autoencoder,
    "reduced_dimension": config.autoencoder_dimensions,
    "dim_expand_channels": config.local_feature_map_channels,
    "num_classes": None,
    **knobs,
  }
  if isinstance(config, LocalAndGlobalExportConfig) and config.delg_global_features:
    return Delg(
      name="DELG",
      gem_power=config.delg_gem_power,
      embedding_layer_dim=config.delg_embedding_layer_dim,
      **local,
    )
  return Delf(name="DELF", **local)


# ---------------------------------------------------------------------------- export


def _export_kind(config: ExportConfig) -> str:
  return {
    LocalExportConfig: "local",
    GlobalExportConfig: "global",
    LocalAndGlobalExportConfig: "local_and_global",
  }[type(config)]


def _make_module(config: ExportConfig, model) -> tuple[tf.Module, object]:
  if isinstance(config, LocalExportConfig):
    module = modules.LocalFeatureModule(model, config.block3_strides, config.iou)
    return module, module.ExtractFeatures
  if isinstance(config, GlobalExportConfig):
    module = modules.GlobalFeatureModule(
      model,
      config.multi_scale_pool_type,
      config.normalize_global_descriptor,
      config.input_scales_list,
    )
    if config.input_scales_list is None:
      return module, module.ExtractFeatures
    return module, module.ExtractFeaturesFixedScales
  module = modules.LocalAndGlobalFeatureModule(model, config.block3_strides, config.iou)
  return module, module.ExtractFeatures


def _spec_dict(specs: dict) -> dict:
  return {
    key: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
    for key, spec in sorted(specs.items())
  }


def signature_specs(signature) -> tuple[dict, dict]:
  """Returns the ``{name: TensorSpec}`` inputs and outputs of a concrete function."""
  args, kwargs = signature.structured_input_signature
  inputs = {**{spec.name: spec for spec in args}, **kwargs}
  return inputs, dict(signature.structured_outputs)


def export_config_dict(config: ExportConfig, model, signature) -> dict:
  """The export's self-description written to ``delf_export_config.json``."""
  input_specs, output_specs = signature_specs(signature)
  description = {
    "format_version": EXPORT_CONFIG_FORMAT_VERSION,
    "export": _export_kind(config),
    "flags": dataclasses.asdict(config),
    "model_class": type(model).model_class_name,
    "model_config": model.get_config(),
    "signature": {
      "name": "serving_default",
      "inputs": _spec_dict(input_specs),
      "outputs": _spec_dict(output_specs),
    },
    "tensorflow_version": tf.__version__,
  }
  if not isinstance(config, GlobalExportConfig):
    description["local"] = {
      "descriptor_dim": int(model.local_descriptor_dim),
      "receptive_field": RECEPTIVE_FIELD,
      "stride": int(BASE_STRIDE * stride_factor(config.block3_strides)),
      "padding": PADDING,
      "iou": config.iou,
      "descriptors": "raw (not L2-normalised)",
    }
  if not isinstance(config, LocalExportConfig):
    description["global"] = {"descriptor_dim": int(model.descriptor_dim)}
  return description


@contextlib.contextmanager
def _quiet_tensorflow_info():
  """Hides TF's INFO lines while saving (one lists hundreds of renamed loop inputs)."""
  logger = logging.getLogger("tensorflow")
  level, verbosity = logger.level, absl_logging.get_verbosity()
  logger.setLevel(max(level, logging.WARNING))
  absl_logging.set_verbosity(min(verbosity, absl_logging.WARNING))
  try:
    yield
  finally:
    logger.setLevel(level)
    absl_logging.set_verbosity(verbosity)


def export(config: ExportConfig) -> str:
  """Exports the checkpoint as a SavedModel at ``config.export_path``; returns that path.

  Raises:
    ValueError: ``export_path`` exists, bad flag values, or (CheckpointMismatchError)
      the checkpoint does not match the flags.
    FileNotFoundError: no checkpoint at ``ckpt_path``.
  """
  export_path = os.path.abspath(config.export_path)
  check_export_path(export_path)
  check_flag_values(config)
  check_checkpoint(config.ckpt_path)
  training = read_training_model_config(config.ckpt_path)
  try:
    model = build_export_model(config, training)
  except ValueError as e:
    # e.g. the autoencoder width does not fit the backbone's block3.
    raise CheckpointMismatchError(
      _mismatch_message(config.ckpt_path, [str(e)], config, training, missing=["autoencoder"])
    ) from None
  load_and_verify(
    model,
    config.ckpt_path,
    config,
    training,
    global_only=isinstance(config, GlobalExportConfig),
    local_only=isinstance(config, LocalExportConfig),
  )
  print(f"Checkpoint loaded from {config.ckpt_path}")
  for difference in behaviour_mismatches(config, training) if training else ():
    print(f"Warning: {difference} in {MODEL_CONFIG_FILENAME}; exporting as the flags say")
  module, served = _make_module(config, model)
  signature = served.get_concrete_function()

  parent = os.path.dirname(export_path)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_path)}.tmp-", dir=parent)
  try:
    with _quiet_tensorflow_info():
      tf.saved_model.save(module, staging, signatures={"serving_default": signature})
    with open(os.path.join(staging, EXPORT_CONFIG_FILENAME), "w") as f:
      json.dump(export_config_dict(config, model, signature), f, indent=2)
      f.write("\n")
    check_export_path(export_path)  # Nobody created it meanwhile.
    os.rename(staging, export_path)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  print(f"SavedModel written to {export_path}")
  return export_path
