r"""Draws DELF's attention map of images as heatmaps, with the keypoints it keeps.

Usage:
  python scripts/visualize_attention.py \
    --config_path=configs/delf_tf2_config_example.pbtxt \
    --list_images_path=list_images.txt --scales=0.5,1.0 --output_dir=attention_pictures

  python scripts/visualize_attention.py --model_path=gldv2_model_local \
    --image_paths=image_1.jpg,image_2.jpg --score_threshold=0

Writes <output_dir>/<image basename>_attention_scale<scale>.png for every image and
scale: the photo with the attention of every feature-map cell at that pyramid scale
overlaid (blue = low, red = high, interpolated between cell centres), a colour bar
of the raw attention scores with score_threshold marked, and white rings on the
keypoints DELF keeps at that scale on its own (attention >= score_threshold, best
max_feature_num). The model, scales, threshold, feature count and image resizing
come from the DelfConfig at --config_path (as for extract_features.py), or from an
exported local model (--model_path: export_local_model.py or
export_local_and_global_model.py) with scale 1.0 and the DelfConfig defaults
(score_threshold 100, max_feature_num 1000) unless the flags say otherwise.
"""

from __future__ import annotations

from absl import app, flags

from delf import attention_plot, cli_flags

_CONFIG_PATH = flags.DEFINE_string(
  "config_path",
  "",
  "Text-format DelfConfig (as for extract_features.py): model, image scales, "
  "score_threshold, max_feature_num, image resizing.",
)
_MODEL_PATH = flags.DEFINE_string(
  "model_path",
  "",
  "Exported local-feature SavedModel; replaces the config's model_path, or is used "
  "alone (then scale 1.0 unless --scales is given).",
)
_IMAGE_PATHS = flags.DEFINE_list("image_paths", [], "Comma-separated image files.")
_LIST_IMAGES_PATH = flags.DEFINE_string(
  "list_images_path", "", "Text file with one image path per line (added to --image_paths)."
)
_SCALES = flags.DEFINE_list(
  "scales",
  [],
  "Comma-separated pyramid scales to draw, e.g. 0.5,1.0 (default: the config's image_scales, "
  "or 1.0 with --model_path alone).",
)
_SCORE_THRESHOLD = flags.DEFINE_float(
  "score_threshold",
  None,
  "Attention threshold of the kept keypoints, on the model's raw attention scale "
  "(default: the config's, 100 without a config).",
)
_MAX_FEATURE_NUM = flags.DEFINE_integer(
  "max_feature_num",
  None,
  "At most this many kept keypoints per picture (default: the config's, 1000 without one).",
)
_OUTPUT_DIR = flags.DEFINE_string(
  "output_dir", "attention_pictures", "Directory for the PNG files; created if missing."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  try:
    scales = tuple(float(s) for s in _SCALES.value)
  except ValueError:
    raise app.UsageError(f"--scales must be numbers, got {','.join(_SCALES.value)}") from None
  config = attention_plot.VisualizeAttentionConfig(
    image_paths=tuple(_IMAGE_PATHS.value),
    list_images_path=_LIST_IMAGES_PATH.value,
    output_dir=_OUTPUT_DIR.value,
    config_path=_CONFIG_PATH.value,
    model_path=_MODEL_PATH.value,
    scales=scales,
    score_threshold=_SCORE_THRESHOLD.value,
    max_feature_num=_MAX_FEATURE_NUM.value,
  )
  return attention_plot.visualize_attention(config)


if __name__ == "__main__":
  cli_flags.run(main, tensorflow=True)
