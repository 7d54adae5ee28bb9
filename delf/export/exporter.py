"""Build the export model, load it from the checkpoint, write the SavedModel (training.md §7).

The checkpoint is verified by `checkpoint_check` (KB-30, KB-31). The
SavedModel is written to a temporary directory and renamed into place, so a
failed export leaves nothing behind, and it carries its own
``delf_export_config.json`` (flags, model config, descriptor sizes, receptive
field, signature).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import tempfile
import time

import tensorflow as tf
from absl import logging as absl_logging

from delf import atomic_io
from delf.export import modules, reference_checkpoint
from delf.export.checkpoint_check import (
  MODEL_CONFIG_FILENAME,
  CheckpointMismatchError,
  behaviour_mismatches,
  check_checkpoint,
  flag_mismatches,
  load_and_verify,
  mismatch_message,
  read_training_model_config,
)
from delf.export.configs import (
  DEFAULT_CKPT_PATH,
  ExportConfig,
  GlobalExportConfig,
  LocalAndGlobalExportConfig,
  LocalExportConfig,
  check_flag_values,
)
from delf.export.receptive_field import BASE_STRIDE, PADDING, RECEPTIVE_FIELD, stride_factor

__all__ = [
  "DEFAULT_CKPT_PATH",
  "EXPORT_CONFIG_FILENAME",
  "MODEL_CONFIG_FILENAME",
  "CheckpointMismatchError",
  "GlobalExportConfig",
  "LocalAndGlobalExportConfig",
  "LocalExportConfig",
  "behaviour_mismatches",
  "build_export_model",
  "check_checkpoint",
  "check_export_path",
  "export",
  "export_config_dict",
  "flag_mismatches",
  "load_and_verify",
  "signature_specs",
]

EXPORT_CONFIG_FILENAME = "delf_export_config.json"
"""Written into every export directory: how the SavedModel was made and what it returns."""
EXPORT_CONFIG_FORMAT_VERSION = 1


def check_export_path(export_path: str) -> None:
  """Refuses to overwrite anything, like the reference (ValueError)."""
  if not export_path:
    raise ValueError("export_path is required")
  if os.path.lexists(export_path):
    raise ValueError(f"export_path {export_path} already exists; choose a new directory")


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


def reduced_precision_model(model, precision: str):
  """The export model computing in ``precision`` (batch norms folded); says if bf16 is slow here."""
  from delf.export.folded import FoldedInferenceModel
  from delf.export.precision import bf16_support

  if precision == "bfloat16":
    native, reason = bf16_support()
    print(f"{'' if native else 'Warning: '}bfloat16 export: {reason}", flush=True)
  return FoldedInferenceModel(model, precision)


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
  if config.precision != "float32":
    description["precision"] = config.precision
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


def _staging_prefix(export_path: str) -> str:
  return f".{os.path.basename(export_path)}.tmp-"


def _staging_owner() -> str:
  return f"{socket.gethostname()}-{os.getpid()}-"


_STALE_FOREIGN_STAGING_SECONDS = 24 * 3600


def remove_stale_staging(export_path: str) -> list[str]:
  """Removes staging folders that killed exports to ``export_path`` left behind.

  A staging folder is named after its process (host and pid); it is stale when
  that process no longer runs on this host. Folders of other hosts (shared file
  systems) or without an owner are removed once a day old. Returns what was removed.
  """
  parent = os.path.dirname(export_path) or "."
  prefix = _staging_prefix(export_path)
  host = socket.gethostname()
  removed = []
  for name in os.listdir(parent):
    if not name.startswith(prefix):
      continue
    path = os.path.join(parent, name)
    owner = name[len(prefix) :].rsplit("-", 2)
    stale = False
    if len(owner) == 3 and owner[0] == host and owner[1].isdigit():
      try:
        os.kill(int(owner[1]), 0)
      except ProcessLookupError:
        stale = True
      except PermissionError:
        stale = False
    else:
      try:
        stale = time.time() - os.path.getmtime(path) > _STALE_FOREIGN_STAGING_SECONDS
      except OSError:
        stale = False
    if stale:
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  if removed:
    print(f"Removed {len(removed)} staging folder(s) of interrupted exports: {', '.join(removed)}")
  return removed


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
  source = reference_checkpoint.inspect_export_checkpoint(config.ckpt_path)
  from_reference = reference_checkpoint.uses_reference_loader(source)
  if from_reference:
    training = source.model_config()
  else:
    training = read_training_model_config(config.ckpt_path)
  try:
    model = build_export_model(config, training)
  except ValueError as e:
    # e.g. the autoencoder width does not fit the backbone's block3.
    raise CheckpointMismatchError(
      mismatch_message(config.ckpt_path, [str(e)], config, training, missing=["autoencoder"])
    ) from None
  global_only = isinstance(config, GlobalExportConfig)
  local_only = isinstance(config, LocalExportConfig)
  if from_reference:
    reference_checkpoint.load_reference_and_verify(model, source, config, global_only, local_only)
    print(f"Loaded {source.describe()}")
  else:
    load_and_verify(model, source.prefix, config, training, global_only, local_only)
  print(f"Checkpoint loaded from {config.ckpt_path}")
  for difference in behaviour_mismatches(config, training) if training else ():
    print(f"Warning: {difference} in {MODEL_CONFIG_FILENAME}; exporting as the flags say")
  served_model = model
  if config.precision != "float32":
    served_model = reduced_precision_model(model, config.precision)
  module, served = _make_module(config, served_model)
  signature = served.get_concrete_function()
  signatures = {"serving_default": signature}
  if getattr(config, "batch_signature", False):
    signatures[modules.BATCH_SIGNATURE] = module.ExtractFeaturesBatch.get_concrete_function()

  parent = os.path.dirname(export_path)
  os.makedirs(parent, exist_ok=True)
  remove_stale_staging(export_path)
  staging = tempfile.mkdtemp(prefix=_staging_prefix(export_path) + _staging_owner(), dir=parent)
  try:
    # mkdtemp makes a 0700 folder; the export gets what os.makedirs would give it.
    os.chmod(staging, 0o777 & ~atomic_io.current_umask())
    with _quiet_tensorflow_info():
      tf.saved_model.save(module, staging, signatures=signatures)
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
