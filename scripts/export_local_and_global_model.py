r"""Exports a trained DELG (or DELF) checkpoint as a local + global SavedModel.

Usage:
  python scripts/export_local_and_global_model.py \
    --ckpt_path=/tmp/delf/delf_weights --export_path=/tmp/delg_export \
    [--delg_global_features] [--delg_gem_power=3.0] [--delg_embedding_layer_dim=2048] \
    [--block3_strides] [--iou=1.0] [--use_autoencoder] [--autoencoder_dimensions=128] \
    [--local_feature_map_channels=1024]

``serving_default`` takes ``input_image`` (uint8 [H,W,3]), ``input_scales``
(float32 [S]), ``input_max_feature_num`` (int32), ``input_abs_thres``
(float32) and ``input_global_scales_ind`` (int32 [K]) and returns ``boxes``,
``features``, ``scales``, ``scores`` and ``global_descriptors`` (raw values).
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
  "delg_global_features", True, "DELG global head (GeM + embedding); --no for a DELF checkpoint."
)
flags.DEFINE_float("delg_gem_power", 3.0, "GeM power of the DELG head; as in training.")
flags.DEFINE_integer(
  "delg_embedding_layer_dim", 2048, "Size of the DELG embedding layer; as in training."
)
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

  config = exporter.LocalAndGlobalExportConfig(
    export_path=FLAGS.export_path,
    ckpt_path=FLAGS.ckpt_path,
    delg_global_features=FLAGS.delg_global_features,
    delg_gem_power=FLAGS.delg_gem_power,
    delg_embedding_layer_dim=FLAGS.delg_embedding_layer_dim,
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
    raise SystemExit(f"export_local_and_global_model: error: {e}") from None


if __name__ == "__main__":
  cli_flags.run(main, tensorflow=True)
