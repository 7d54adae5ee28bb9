r"""Exports a trained DELF checkpoint as a local-feature SavedModel.

Usage:
  python scripts/export_local_model.py \
    --ckpt_path=/tmp/delf/delf_weights --export_path=/tmp/delf_local_export \
    [--noblock3_strides] [--iou=1.0] [--nouse_autoencoder] \
    [--autoencoder_dimensions=128] [--local_feature_map_channels=1024]

The SavedModel's ``serving_default`` takes ``input_image`` (uint8 [H,W,3]),
``input_scales`` (float32 [S]), ``input_max_feature_num`` (int32) and
``input_abs_thres`` (float32) and returns ``boxes``, ``features``, ``scales``
and ``scores``. The export directory also holds ``delf_export_config.json``.
The model flags must match training; the export fails, naming the differing
flags, if the checkpoint does not hold the model they describe.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags
from delf.cli_flags import DEFINE_export_speed_flags, DEFINE_integral

FLAGS = flags.FLAGS

flags.DEFINE_string(
  "ckpt_path",
  "/tmp/delf/delf_weights",
  "Checkpoint written by training: <logdir>/delf_weights (the .index/.data-* prefix); the "
  "reference's <logdir>/delf_weights or <logdir>/delf_tf2-ckpt/ckpt-N are read too.",
)
flags.DEFINE_string("export_path", None, "Directory to create for the SavedModel (must not exist).")
flags.DEFINE_boolean(
  "block3_strides", True, "Whether the model sub-samples block3 (stride 32 boxes); as in training."
)
flags.DEFINE_float("iou", 1.0, "IoU threshold of the keypoint NMS; 1.0 suppresses nothing.")
flags.DEFINE_boolean(
  "use_autoencoder", True, "Export the autoencoder-reduced local descriptors; as in training."
)
DEFINE_integral(
  "autoencoder_dimensions", 128, "Local descriptor size of the autoencoder; as in training."
)
DEFINE_integral(
  "local_feature_map_channels", 1024, "Block3 channels reconstructed by the autoencoder."
)

DEFINE_export_speed_flags(batch_signature=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.export_path:
    raise app.UsageError("--export_path is required")
  from delf.export import exporter

  config = exporter.LocalExportConfig(
    export_path=FLAGS.export_path,
    ckpt_path=FLAGS.ckpt_path,
    block3_strides=FLAGS.block3_strides,
    iou=FLAGS.iou,
    use_autoencoder=FLAGS.use_autoencoder,
    autoencoder_dimensions=FLAGS.autoencoder_dimensions,
    local_feature_map_channels=FLAGS.local_feature_map_channels,
    precision=FLAGS.precision,
    batch_signature=FLAGS.batch_signature,
  )
  try:
    exporter.export(config)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"export_local_model: error: {e}") from None


if __name__ == "__main__":
  cli_flags.run(main, tensorflow=True)
