r"""Exports a trained DELF/DELG checkpoint as a global-descriptor SavedModel.

Usage:
  python scripts/export_global_model.py \
    --ckpt_path=/tmp/delf/delf_weights --export_path=/tmp/delg_global_export \
    [--delg_global_features --delg_gem_power=3.0 --delg_embedding_layer_dim=2048]

By default ``serving_default`` takes ``input_image`` (uint8 [H,W,3]),
``input_scales`` (float32 [S]) and ``input_global_scales_ind`` (int32 [K]) and
returns ``global_descriptors`` [K', D], one raw row per selected scale: the
format the extraction tools read.

Kaggle (Landmark Retrieval 2020) format, for a DELG checkpoint:
  python scripts/export_global_model.py \
    --ckpt_path=/tmp/delf/delf_weights --export_path=/tmp/kaggle_export \
    --delg_global_features --input_scales_list=0.70710677,1.0,1.4142135 \
    --multi_scale_pool_type=sum --normalize_global_descriptor
takes only ``input_image`` and returns ``global_descriptor`` [D]; the
extraction tools cannot read it. The model is always built with
``block3_strides=False`` and no autoencoder (global features do not depend on
them).
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags
from delf.cli_flags import DEFINE_export_speed_flags

FLAGS = flags.FLAGS

flags.DEFINE_string(
  "ckpt_path",
  "/tmp/delf/delf_weights",
  "Checkpoint written by training: <logdir>/delf_weights (the .index/.data-* prefix); the "
  "reference's <logdir>/delf_weights or <logdir>/delf_tf2-ckpt/ckpt-N are read too.",
)
flags.DEFINE_string("export_path", None, "Directory to create for the SavedModel (must not exist).")
flags.DEFINE_list(
  "input_scales_list",
  None,
  "Fixed image scales, e.g. 0.70710677,1.0,1.4142135: the signature then takes only "
  "input_image and runs all of them. Default: scales are inputs of the signature.",
)
flags.DEFINE_enum(
  "multi_scale_pool_type",
  "None",
  ["None", "average", "sum"],
  "Pool the per-scale descriptors into one (output global_descriptor); None keeps one "
  "row per scale (output global_descriptors).",
)
flags.DEFINE_boolean(
  "normalize_global_descriptor",
  False,
  "L2-normalise each per-scale descriptor (pool type None) or the pooled descriptor.",
)
flags.DEFINE_boolean(
  "delg_global_features",
  False,
  "Export the DELG global head (GeM + embedding layer); needed for DELG checkpoints.",
)
flags.DEFINE_float("delg_gem_power", 3.0, "GeM power of the DELG head; as in training.")
flags.DEFINE_integer(
  "delg_embedding_layer_dim", 2048, "Size of the DELG embedding layer; as in training."
)

DEFINE_export_speed_flags(batch_signature=False)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.export_path:
    raise app.UsageError("--export_path is required")
  scales = None
  if FLAGS.input_scales_list is not None:
    try:
      scales = tuple(float(s) for s in FLAGS.input_scales_list)
    except ValueError:
      raise app.UsageError(
        f"--input_scales_list must be numbers, got {','.join(FLAGS.input_scales_list)}"
      ) from None
  from delf.export import exporter

  config = exporter.GlobalExportConfig(
    export_path=FLAGS.export_path,
    ckpt_path=FLAGS.ckpt_path,
    input_scales_list=scales,
    multi_scale_pool_type=FLAGS.multi_scale_pool_type,
    normalize_global_descriptor=FLAGS.normalize_global_descriptor,
    delg_global_features=FLAGS.delg_global_features,
    delg_gem_power=FLAGS.delg_gem_power,
    delg_embedding_layer_dim=FLAGS.delg_embedding_layer_dim,
    precision=FLAGS.precision,
  )
  try:
    exporter.export(config)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"export_global_model: error: {e}") from None


if __name__ == "__main__":
  cli_flags.run(main, tensorflow=True)
