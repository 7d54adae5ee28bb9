"""Class count and label validation (KB-10: labels are checked, never clipped)."""

from __future__ import annotations

from delf.training.config import TrainingConfig


def _dataset_class_counts() -> dict[str, int]:
  from delf.data.pipeline import NUM_CLASSES

  return dict(NUM_CLASSES)


def resolve_num_classes(config: TrainingConfig) -> tuple[int, str]:
  """The class count and where it came from.

  Rule: ``--num_classes`` if set; else ``num_classes`` of the dataset metadata
  file next to the train shards (written by build_image_dataset); else the
  ``--dataset_version`` table (gld_v1 14951, gld_v2 203094, gld_v2_clean 81313).
  """
  if config.num_classes:
    return int(config.num_classes), "--num_classes"
  from delf.data.metadata import METADATA_FILENAME, read_metadata

  metadata = read_metadata(config.train_file_pattern)
  if metadata and metadata.get("num_classes"):
    source = f"{METADATA_FILENAME} next to {config.train_file_pattern}"
    return int(metadata["num_classes"]), source
  counts = _dataset_class_counts()
  return counts[config.dataset_version], f"--dataset_version={config.dataset_version}"


def label_error_message(
  label: int, image_id: str, split: str, num_classes: int, source: str, dataset_version: str
) -> str:
  if label < 0:
    hint = "negative labels mean the TFRecords are corrupt; rebuild them"
  else:
    fitting = [
      v for v, n in sorted(_dataset_class_counts().items(), key=lambda x: x[1]) if n > label
    ]
    hint = "pass --num_classes=<number of classes in your data>"
    if fitting and fitting[0] != dataset_version:
      hint = f"use --dataset_version={fitting[0]} if that is your data, or " + hint
  return (
    f"{split} label {label} of image '{image_id}' is out of range [0, {num_classes}) "
    f"(num_classes from {source}; --dataset_version={dataset_version}): {hint}"
  )
