"""The resolved training configuration (a frozen dataclass built by ``scripts/train.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

DATASET_VERSIONS = ("gld_v1", "gld_v2", "gld_v2_clean")
STRATEGIES = ("mirrored", "multi_worker_mirrored", "one_device")
MIXED_PRECISION = ("none", "bf16", "fp16")

# Hard-coded in the reference (training.md §6.2) and overridden by --debug (§6.3).
REPORT_INTERVAL = 100
EVAL_INTERVAL = 1000
SAVE_INTERVAL = 1000
CLIP_NORM = 10.0
MOMENTUM = 0.9
EVAL_EXAMPLES = 50000


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  """Everything ``delf.training.loop.train`` needs; field names follow the train.py flags.

  ``report_interval`` and ``num_eval_batches`` are the reference's constants (not
  flags); ``eval_interval``, ``save_interval`` and ``num_eval_examples`` are flags
  whose defaults are the reference's constants. ``num_eval_batches=None`` means
  ``int(num_eval_examples / batch_size)``; validation never goes beyond one pass over
  the validation split when its size is known. ``block_counts``/``width_factor`` select a smaller
  backbone (tests, experiments); the defaults give ResNet-50.
  """

  logdir: str = "/tmp/delf"
  train_file_pattern: str = "/tmp/data/train*"
  validation_file_pattern: str = "/tmp/data/validation*"
  dataset_version: str = "gld_v1"
  num_classes: int | None = None
  seed: int = 0
  initial_lr: float = 0.01
  batch_size: int = 32
  max_iters: int = 500000
  block3_strides: bool = True
  use_augmentation: bool = True
  imagenet_checkpoint: str | None = None
  init_from: str | None = None
  attention_loss_weight: float = 1.0
  delg_global_features: bool = False
  delg_gem_power: float = 3.0
  delg_embedding_layer_dim: int = 2048
  delg_scale_factor_init: float = 45.25
  delg_arcface_margin: float = 0.1
  image_size: int = 321
  use_autoencoder: bool = True
  reconstruction_loss_weight: float = 10.0
  autoencoder_dimensions: int = 128
  local_feature_map_channels: int = 1024
  debug: bool = False
  strategy: str = "mirrored"
  mixed_precision: str = "none"
  jit_compile: bool = False
  # Seeds Python/NumPy/TF/Keras from ``seed`` and turns on TensorFlow op determinism.
  deterministic: bool = False
  block_counts: Sequence[int] = (3, 4, 6, 3)
  width_factor: float = 1.0
  report_interval: int = REPORT_INTERVAL
  eval_interval: int = EVAL_INTERVAL
  save_interval: int = SAVE_INTERVAL
  num_eval_batches: int | None = None
  # Fused momentum-SGD kernel and clipping folded into it (delf.training.optimizer);
  # False runs Keras's SGD and tf.clip_by_global_norm (the same mathematics, slower). Both
  # take the clipping norm of large dense heads' kernels from Gram matrices (loop.py).
  fused_updates: bool = True
  num_eval_examples: int = EVAL_EXAMPLES

  def __post_init__(self):
    def check(ok: bool, message: str) -> None:
      if not ok:
        raise ValueError(message)

    check(
      self.dataset_version in DATASET_VERSIONS, f"unknown dataset_version {self.dataset_version!r}"
    )
    check(self.strategy in STRATEGIES, f"strategy must be one of {STRATEGIES}")
    check(
      self.mixed_precision in MIXED_PRECISION, f"mixed_precision must be one of {MIXED_PRECISION}"
    )
    check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
    check(self.max_iters >= 1, f"max_iters must be >= 1, got {self.max_iters}")
    check(self.image_size >= 32, f"image_size must be >= 32, got {self.image_size}")
    check(self.initial_lr >= 0, f"initial_lr must be >= 0, got {self.initial_lr}")
    check(
      self.num_classes is None or self.num_classes >= 1,
      f"num_classes must be >= 1, got {self.num_classes}",
    )
    check(
      not (self.init_from and self.imagenet_checkpoint),
      "--init_from and --imagenet_checkpoint exclude each other (init_from loads the backbone too)",
    )
    for name in ("report_interval", "eval_interval", "save_interval", "num_eval_examples"):
      check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
    object.__setattr__(self, "block_counts", tuple(int(n) for n in self.block_counts))

  def resolved(self) -> TrainingConfig:
    """Applies the ``--debug`` overrides (§6.3) and derives ``num_eval_batches``."""
    config = self
    if self.debug:
      config = dataclasses.replace(
        self,
        batch_size=4,
        max_iters=100,
        num_eval_batches=1,
        save_interval=1,
        report_interval=10,
      )
    if config.num_eval_batches is None:
      config = dataclasses.replace(
        config, num_eval_batches=max(1, int(config.num_eval_examples / config.batch_size))
      )
    return config

  def to_json_dict(self) -> dict:
    data = dataclasses.asdict(self)
    data["block_counts"] = list(self.block_counts)
    return data
