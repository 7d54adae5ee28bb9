"""Typed configurations of the three export scripts (training.md §7.6-7.8).

The scripts turn their absl flags into one of these frozen dataclasses; field
names and defaults are the flags'. Ours (KB-30): ``ckpt_path`` defaults to what
training writes.
"""

from __future__ import annotations

import dataclasses

from delf.export.global_features import validate_pool_type
from delf.export.nms import validate_iou_threshold
from delf.export.precision import PRECISIONS

DEFAULT_CKPT_PATH = "/tmp/delf/delf_weights"
"""What training writes by default (``<logdir>/delf_weights`` with logdir ``/tmp/delf``)."""


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
  precision: str = "float32"
  batch_signature: bool = False


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
  precision: str = "float32"


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
  precision: str = "float32"
  batch_signature: bool = False


ExportConfig = LocalExportConfig | GlobalExportConfig | LocalAndGlobalExportConfig


def check_flag_values(config: ExportConfig) -> None:
  """Rejects bad flag values before the (slow) model build."""
  if config.precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
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
