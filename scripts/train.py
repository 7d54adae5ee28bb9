r"""Trains a DELF or DELG model on GLDv2-style TFRecords.

Usage (local features, as in the reference README):
  python -m scripts.train \
    --train_file_pattern=gldv2_dataset/tfrecord/train* \
    --validation_file_pattern=gldv2_dataset/tfrecord/validation* \
    --imagenet_checkpoint=resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
    --dataset_version=gld_v2_clean --logdir=gldv2_training/
DELG adds --delg_global_features. Validated: 8 GPUs --batch_size=256 --initial_lr=0.01;
4 GPUs --batch_size=128 --initial_lr=0.005.

Class count: --num_classes if given, else "num_classes" of the dataset_metadata.json
that build_image_dataset wrote next to the train shards, else the --dataset_version
table (gld_v1 14951, gld_v2 203094, gld_v2_clean 81313). The choice is printed.
A label outside [0, num_classes) stops training with a one-line error (no clipping).

Writes into --logdir: delf_tf2-ckpt/ (checkpoints every --save_interval=1000 steps, numbered by step,
including the optimizer state and the input-stream position; training resumes from the
latest one), delf_weights.* + model_config.json (what the export scripts read),
training_config.json (resolved settings) and train_logs/ (TensorBoard).
--deterministic (with --seed) makes two runs with the same flags on the same machine give
the same losses and weights (seeded initialisation, TensorFlow op determinism; the input
pipeline is seeded and ordered anyway).
One run per --logdir at a time. Before training, the shards are checked against the
dataset_metadata.json manifest (refused if they mix builds) and must hold examples; a
damaged shard stops training with one line naming it and the byte offset.
"""

from __future__ import annotations

import sys

from absl import app, flags

from delf import cli_flags
from delf.training import config as config_lib

_DEBUG = flags.DEFINE_boolean(
  "debug",
  False,
  "Debug mode: run tf.functions eagerly, global batch 4, 100 steps, report every 10 steps, "
  "save every step, validate once (1 batch) at the end.",
)
_LOGDIR = flags.DEFINE_string(
  "logdir", "/tmp/delf", "Output directory for TensorBoard logs, checkpoints and delf_weights."
)
_TRAIN_FILE_PATTERN = flags.DEFINE_string(
  "train_file_pattern", "/tmp/data/train*", "Glob of the train TFRecord shards."
)
_VALIDATION_FILE_PATTERN = flags.DEFINE_string(
  "validation_file_pattern", "/tmp/data/validation*", "Glob of the validation TFRecord shards."
)
_DATASET_VERSION = flags.DEFINE_enum(
  "dataset_version",
  "gld_v1",
  list(config_lib.DATASET_VERSIONS),
  "Google Landmarks dataset version; only picks num_classes when neither --num_classes nor "
  "a dataset_metadata.json next to the train shards gives it.",
)
_NUM_CLASSES = flags.DEFINE_integer(
  "num_classes",
  None,
  "Number of classes (custom data). Unset or 0: from dataset_metadata.json next to the train "
  "shards, else from --dataset_version.",
  lower_bound=0,
)
_SEED = flags.DEFINE_integer(
  "seed",
  0,
  "Shuffle (and crop) seed of the train and validation data; with --deterministic also the "
  "seed of the weight initialisation.",
)
_DETERMINISTIC = flags.DEFINE_boolean(
  "deterministic",
  False,
  "Reproducible runs: seed Python, NumPy, TensorFlow and Keras from --seed and turn on "
  "TensorFlow op determinism (tf.config.experimental.enable_op_determinism), so that two "
  "runs with the same flags on the same machine give the same losses and weights. No "
  "measurable cost on CPU (README, Demo results); on GPUs deterministic kernels can be slower.",
)
_INITIAL_LR = flags.DEFINE_float(
  "initial_lr", 0.01, "Initial learning rate (linear decay to 0 at --max_iters)."
)
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", 32, "Global batch size (split across replicas).", lower_bound=1
)
_MAX_ITERS = flags.DEFINE_integer("max_iters", 500000, "Number of optimizer steps.", lower_bound=1)
_EVAL_INTERVAL = flags.DEFINE_integer(
  "eval_interval",
  config_lib.EVAL_INTERVAL,
  "Validate every this many steps (the reference's constant 1000).",
  lower_bound=1,
)
_SAVE_INTERVAL = flags.DEFINE_integer(
  "save_interval",
  config_lib.SAVE_INTERVAL,
  "Write a checkpoint and delf_weights every this many steps, and at the last step (the "
  "reference's constant 1000; --debug saves every step).",
  lower_bound=1,
)
_NUM_EVAL_EXAMPLES = flags.DEFINE_integer(
  "num_eval_examples",
  config_lib.EVAL_EXAMPLES,
  "Validation examples per validation (the reference's constant 50000, in batches of "
  "--batch_size); at most one pass over the validation split when dataset_metadata.json or "
  "the shards give its size.",
  lower_bound=1,
)
_BLOCK3_STRIDES = flags.DEFINE_boolean(
  "block3_strides", True, "Sub-sample block3 to stride 32 (1x1 max pool after stage 4)."
)
_USE_AUGMENTATION = flags.DEFINE_boolean(
  "use_augmentation", True, "ImageNet-style random crop on the train images."
)
_IMAGENET_CHECKPOINT = flags.DEFINE_string(
  "imagenet_checkpoint",
  None,
  "Keras ResNet50 ImageNet weights (resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5; "
  "an .h5 file, not a TF checkpoint), loaded into the backbone on a fresh start only.",
)
_INIT_FROM = flags.DEFINE_string(
  "init_from",
  None,
  "Start a new run (step 0) from these weights: ours (logdir, delf_weights, "
  "delf_tf2-ckpt/ckpt-N, export) or the reference's (delf_weights, ckpt-N, exported "
  "SavedModel). Classifier heads with another class count are re-initialised.",
)
_ATTENTION_LOSS_WEIGHT = flags.DEFINE_float(
  "attention_loss_weight", 1.0, "Weight of the attention cross-entropy."
)
_DELG_GLOBAL_FEATURES = flags.DEFINE_boolean(
  "delg_global_features",
  False,
  "Train DELG (GeM + embedding + ArcFace cosine classifier) instead of DELF.",
)
_DELG_GEM_POWER = flags.DEFINE_float("delg_gem_power", 3.0, "GeM power p (DELG only).")
_DELG_EMBEDDING_LAYER_DIM = flags.DEFINE_integer(
  "delg_embedding_layer_dim", 2048, "Size of the embedding/whitening FC (DELG only)."
)
_DELG_SCALE_FACTOR_INIT = flags.DEFINE_float(
  "delg_scale_factor_init",
  45.25,
  "Cosine-logit scale s (not trainable, so permanent); ~sqrt(2048) (DELG only).",
)
_DELG_ARCFACE_MARGIN = flags.DEFINE_float(
  "delg_arcface_margin", 0.1, "ArcFace additive angular margin in radians (DELG only)."
)
_IMAGE_SIZE = flags.DEFINE_integer(
  "image_size", 321, "Square train/validation image side.", lower_bound=32
)
_USE_AUTOENCODER = flags.DEFINE_boolean(
  "use_autoencoder",
  True,
  "Add the DELG dimensionality-reduction autoencoder on block3 (reconstruction loss).",
)
_RECONSTRUCTION_LOSS_WEIGHT = flags.DEFINE_float(
  "reconstruction_loss_weight",
  10.0,
  "Weight of the reconstruction MSE (averaged over the global batch: to reproduce the "
  "reference's N-GPU runs exactly use 10*N).",
)
_AUTOENCODER_DIMENSIONS = cli_flags.DEFINE_integral(
  "autoencoder_dimensions", 128, "Local descriptor size after the autoencoder."
)
_LOCAL_FEATURE_MAP_CHANNELS = cli_flags.DEFINE_integral(
  "local_feature_map_channels", 1024, "Channels of block3 that the autoencoder reconstructs."
)
_STRATEGY = flags.DEFINE_enum(
  "strategy",
  "mirrored",
  list(config_lib.STRATEGIES),
  "mirrored: all local GPUs (all logical CPUs without GPU); multi_worker_mirrored: workers "
  "from TF_CONFIG; one_device: the first GPU, else the CPU.",
)
_MIXED_PRECISION = flags.DEFINE_enum(
  "mixed_precision",
  "none",
  list(config_lib.MIXED_PRECISION),
  "Compute in bfloat16 or float16 (with loss scaling); variables, losses and logits stay float32.",
)
_JIT_COMPILE = flags.DEFINE_boolean(
  "jit_compile", False, "Compile the forward/backward pass with XLA."
)
_BLOCK_COUNTS = flags.DEFINE_list(
  "backbone_block_counts",
  ["3", "4", "6", "3"],
  "Residual blocks per ResNet stage (default ResNet-50; smaller for tests/experiments).",
)
flags.register_validator(
  _BLOCK_COUNTS,
  lambda counts: len(counts) == 4 and all(c.strip().isdigit() and int(c) >= 1 for c in counts),
  message="must be 4 positive integers separated by commas, e.g. 3,4,6,3",
)
_WIDTH_FACTOR = flags.DEFINE_float(
  "backbone_width_factor",
  1.0,
  "Multiplies every backbone width (1.0 = ResNet-50; with another value set "
  "--local_feature_map_channels to 1024 times it).",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from delf.training.loop import train

  try:
    config = config_lib.TrainingConfig(
      logdir=_LOGDIR.value,
      train_file_pattern=_TRAIN_FILE_PATTERN.value,
      validation_file_pattern=_VALIDATION_FILE_PATTERN.value,
      dataset_version=_DATASET_VERSION.value,
      num_classes=_NUM_CLASSES.value or None,
      seed=_SEED.value,
      initial_lr=_INITIAL_LR.value,
      batch_size=_BATCH_SIZE.value,
      max_iters=_MAX_ITERS.value,
      eval_interval=_EVAL_INTERVAL.value,
      save_interval=_SAVE_INTERVAL.value,
      num_eval_examples=_NUM_EVAL_EXAMPLES.value,
      block3_strides=_BLOCK3_STRIDES.value,
      use_augmentation=_USE_AUGMENTATION.value,
      imagenet_checkpoint=_IMAGENET_CHECKPOINT.value,
      init_from=_INIT_FROM.value,
      attention_loss_weight=_ATTENTION_LOSS_WEIGHT.value,
      delg_global_features=_DELG_GLOBAL_FEATURES.value,
      delg_gem_power=_DELG_GEM_POWER.value,
      delg_embedding_layer_dim=_DELG_EMBEDDING_LAYER_DIM.value,
      delg_scale_factor_init=_DELG_SCALE_FACTOR_INIT.value,
      delg_arcface_margin=_DELG_ARCFACE_MARGIN.value,
      image_size=_IMAGE_SIZE.value,
      use_autoencoder=_USE_AUTOENCODER.value,
      reconstruction_loss_weight=_RECONSTRUCTION_LOSS_WEIGHT.value,
      autoencoder_dimensions=_AUTOENCODER_DIMENSIONS.value,
      local_feature_map_channels=_LOCAL_FEATURE_MAP_CHANNELS.value,
      debug=_DEBUG.value,
      strategy=_STRATEGY.value,
      mixed_precision=_MIXED_PRECISION.value,
      jit_compile=_JIT_COMPILE.value,
      deterministic=_DETERMINISTIC.value,
      block_counts=tuple(int(n) for n in _BLOCK_COUNTS.value),
      width_factor=_WIDTH_FACTOR.value,
    )
    train(config)
  except ValueError as e:
    print(f"train.py: error: {e}", file=sys.stderr, flush=True)
    return 1
  return 0


if __name__ == "__main__":
  cli_flags.run(main, tensorflow=True)
