r"""Matches the DELF features of two images and draws the verified correspondences.

Usage:
  python scripts/match_images.py \
    --image_1_path=data/oxford5k_images/hertford_000056.jpg \
    --image_2_path=data/oxford5k_images/oxford_000317.jpg \
    --features_1_path=data/oxford5k_features/hertford_000056.delf \
    --features_2_path=data/oxford5k_features/oxford_000317.delf \
    --output_image=matched_images.png

Every image-2 descriptor is matched to its nearest image-1 descriptor if their
Euclidean distance is below --distance_threshold; the putative matches are then
verified with a seeded affine RANSAC (3 samples, 20 px residual threshold, 1000
trials). Prints the feature counts and `Found <K> inliers`, and saves both images
side by side with a blue line per inlier (PNG or JPEG by the output extension).
Does not need TensorFlow.

Ours (an addition to the reference): with --homography_path (a 3x3 ground-truth
homography mapping (x, y, 1) pixels of image 1 to image 2, as JSON
{"homography": [[...], [...], [...]]}, 3 lines of 3 numbers, or OpenCV XML), it
also prints
  Found <K> inliers; <C> (<P> %) within <T> px of the ground-truth homography
and draws correct inliers in green and wrong ones in red.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags, match_plot

_IMAGE_1_PATH = flags.DEFINE_string(
  "image_1_path", "test_images/image_1.jpg", "Path to the first image."
)
_IMAGE_2_PATH = flags.DEFINE_string(
  "image_2_path", "test_images/image_2.jpg", "Path to the second image."
)
_FEATURES_1_PATH = flags.DEFINE_string(
  "features_1_path",
  "test_features/image_1.delf",
  "Path to the .delf local features of the first image.",
)
_FEATURES_2_PATH = flags.DEFINE_string(
  "features_2_path",
  "test_features/image_2.delf",
  "Path to the .delf local features of the second image.",
)
_OUTPUT_IMAGE = flags.DEFINE_string(
  "output_image",
  "test_match.png",
  "Where to save the picture of the matches; the extension (.png, .jpg) picks the format.",
)
_DISTANCE_THRESHOLD = flags.DEFINE_float(
  "distance_threshold",
  0.8,
  "Maximum (strict) Euclidean distance between two descriptors for a putative match; "
  "0.8 is the reference's fixed value.",
)
_SEED = flags.DEFINE_integer(
  "seed", 0, "Seed of the RANSAC sampling; a fixed seed gives the same inliers every run."
)

_HOMOGRAPHY_PATH = flags.DEFINE_string(
  "homography_path",
  None,
  "Ours (not in the reference): optional ground-truth homography file, a 3x3 matrix mapping "
  'pixel (x, y, 1) of image 1 to image 2 (JSON {"homography": [[..],[..],[..]]}, 3 lines '
  "of 3 numbers, or OpenCV FileStorage XML such as H1to3p.xml). Then also prints how many "
  "inliers lie within --homography_tolerance_px of their true position and colours correct "
  "(green) and wrong (red) inliers in the picture.",
)
_HOMOGRAPHY_TOLERANCE_PX = flags.DEFINE_float(
  "homography_tolerance_px",
  10.0,
  "Ours: an inlier is correct if its image-2 location is at most this many pixels from the "
  "ground-truth homography applied to its image-1 location (used with --homography_path).",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  config = match_plot.MatchImagesConfig(
    image_1_path=_IMAGE_1_PATH.value,
    image_2_path=_IMAGE_2_PATH.value,
    features_1_path=_FEATURES_1_PATH.value,
    features_2_path=_FEATURES_2_PATH.value,
    output_image=_OUTPUT_IMAGE.value,
    distance_threshold=_DISTANCE_THRESHOLD.value,
    seed=_SEED.value,
    homography_path=_HOMOGRAPHY_PATH.value,
    homography_tolerance_px=_HOMOGRAPHY_TOLERANCE_PX.value,
  )
  return match_plot.match_images(config)


if __name__ == "__main__":
  cli_flags.run(main)
