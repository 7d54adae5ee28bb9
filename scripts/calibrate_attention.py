"""Prints a model's attention-score distribution to choose score_threshold (KB-58).

Usage:
  python scripts/calibrate_attention.py --config_path=configs/delf_tf2_config_example.pbtxt \
    --list_images_path=list_images.txt [--max_images=20]

score_threshold in a DelfConfig is on the model's raw attention scale (softplus outputs,
not probabilities; the released models use 100-455). This runs the configured model on
up to --max_images listed images with every feature-map cell kept and prints score
percentiles, the threshold that keeps about 100 / 500 / 1000 / max_feature_num features per
image, and how many features the config's current threshold keeps.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags
from delf.extraction import attention_calibration

_CONFIG_PATH = flags.DEFINE_string(
  "config_path", "delf_config_example.pbtxt", "Text-format DelfConfig of the model."
)
_LIST_IMAGES_PATH = flags.DEFINE_string(
  "list_images_path", "list_images.txt", "Text file with one image path per line."
)
_MAX_IMAGES = flags.DEFINE_integer(
  "max_images", 20, "Use at most this many images of the list.", lower_bound=1
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = attention_calibration.CalibrationConfig(
    config_path=_CONFIG_PATH.value,
    list_images_path=_LIST_IMAGES_PATH.value,
    max_images=_MAX_IMAGES.value,
  )
  try:
    attention_calibration.calibrate_attention(config)
  except (OSError, ValueError) as e:
    raise SystemExit(f"calibrate_attention: error: {e}") from None
  return 0


if __name__ == "__main__":
  cli_flags.run(main, tensorflow=True)
