"""Matching two images end to end and drawing their correspondences (``match_images``).

The reference drew the matches with ``skimage.feature.plot_matches``, which
scikit-image 0.26 removed (KB-48). We draw the same picture with matplotlib
alone: both images side by side (the shorter one padded at the bottom), every
putative keypoint as a hollow black circle, a blue line per RANSAC inlier, axes
off, title ``DELF correspondences``. The Agg backend is used so that no display
is needed (the reference's "no display name" troubleshooting note).

Ours (an addition): given a ground-truth homography (``homography_path``), each
inlier is checked against it (``delf.homography``); the count is printed after the
reference's ``Found <K> inliers`` line, and the picture draws correct inliers in
green and wrong ones in red, with a legend and the counts in the title.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

from delf import homography, matching

TITLE = "DELF correspondences"
CORRECT_COLOR = "limegreen"
WRONG_COLOR = "red"


def _load_rgb(path: str) -> np.ndarray:
  from PIL import Image

  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def side_by_side(image_1: np.ndarray, image_2: np.ndarray) -> np.ndarray:
  """Concatenates two RGB uint8 images horizontally, padding the shorter one with zeros."""
  height = max(image_1.shape[0], image_2.shape[0])
  padded = []
  for image in (image_1, image_2):
    canvas = np.zeros([height, image.shape[1], 3], dtype=np.uint8)
    canvas[: image.shape[0]] = image
    padded.append(canvas)
  return np.concatenate(padded, axis=1)


def plot_matches(
  output_path: str,
  image_1: np.ndarray,
  image_2: np.ndarray,
  locations_1: np.ndarray,
  locations_2: np.ndarray,
  pairs: np.ndarray,
  inliers: np.ndarray,
  title: str = TITLE,
  check: homography.InlierCheck | None = None,
) -> None:
  """Saves the side-by-side match picture (format from the file extension: PNG, JPEG...).

  Args:
    output_path: image file to write (atomically).
    image_1, image_2: RGB uint8 images.
    locations_1, locations_2: [N1, 2] / [N2, 2] (y, x) keypoints.
    pairs: int [M, 2] putative matches (index in 1, index in 2).
    inliers: bool [M]; a blue line is drawn for each True entry.
    title: plot title.
    check: the inliers measured against a ground-truth homography; then correct
      inliers are drawn in green, wrong ones in red, with a legend and the counts
      under the title.
  """
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  from delf import atomic_io

  offset = image_1.shape[1]
  points_1 = np.asarray(locations_1, dtype=np.float64).reshape(-1, 2)[pairs[:, 0]]
  points_2 = np.asarray(locations_2, dtype=np.float64).reshape(-1, 2)[pairs[:, 1]]
  canvas = side_by_side(image_1, image_2)
  # Near the images' own resolution (between 1200 and 2400 px wide), so that small
  # images are enlarged and the lines stay readable.
  width_inches = min(max(canvas.shape[1], 1200), 2400) / 100
  fig, ax = plt.subplots(figsize=(width_inches, width_inches * canvas.shape[0] / canvas.shape[1]))
  fig.subplots_adjust(left=0, right=1, bottom=0, top=1)
  try:
    ax.imshow(canvas, interpolation="nearest")
    if len(pairs):
      ax.scatter(points_1[:, 1], points_1[:, 0], facecolors="none", edgecolors="k", s=8)
      ax.scatter(points_2[:, 1] + offset, points_2[:, 0], facecolors="none", edgecolors="k", s=8)
    inliers = np.asarray(inliers, dtype=bool)
    if check is None:
      colors = np.full(len(pairs), "b", dtype=object)
    else:
      colors = np.where(check.correct, CORRECT_COLOR, WRONG_COLOR).astype(object)
    # Wrong inliers last, so that no correct line hides them.
    order = [i for i in np.flatnonzero(inliers) if colors[i] != WRONG_COLOR]
    order += [i for i in np.flatnonzero(inliers) if colors[i] == WRONG_COLOR]
    # Against a ground truth the lines get a thin dark outline, so that green and red
    # stay visible on any photo (the graffiti pair is mostly red).
    style = {"linewidth": 0.8}
    if check is not None:
      from matplotlib import patheffects

      style = {
        "linewidth": 1.0,
        "path_effects": [patheffects.withStroke(linewidth=2.0, foreground="black", alpha=0.6)],
      }
    for i in order:
      p1, p2 = points_1[i], points_2[i]
      ax.plot((p1[1], p2[1] + offset), (p1[0], p2[0]), "-", color=colors[i], **style)
    ax.set_xlim(0, image_1.shape[1] + image_2.shape[1])
    ax.set_ylim(max(image_1.shape[0], image_2.shape[0]), 0)
    ax.axis("off")
    if check is not None:
      tolerance = f"{check.tolerance_px:g} px"
      title = (
        f"{title}\n{check.num_correct} of {check.num_inliers} inliers "
        f"({check.percent_correct} %) within {tolerance} of the ground-truth homography"
      )
      from matplotlib.lines import Line2D

      ax.legend(
        handles=[
          Line2D(
            [], [], color=CORRECT_COLOR, label=f"correct, <= {tolerance} ({check.num_correct})"
          ),
          Line2D([], [], color=WRONG_COLOR, label=f"wrong, > {tolerance} ({check.num_wrong})"),
        ],
        loc="lower right",
        framealpha=0.85,
      )
    ax.set_title(title)
    extension = os.path.splitext(output_path)[1].lstrip(".").lower() or "png"
    with atomic_io.atomic_output(output_path, "wb") as f:
      fig.savefig(f, format=extension, dpi=100, bbox_inches="tight")
  finally:
    plt.close(fig)


@dataclasses.dataclass(frozen=True)
class MatchImagesConfig:
  """Settings of ``match_images.py`` (flag names and defaults: inference.md §4.2)."""

  image_1_path: str = "test_images/image_1.jpg"
  image_2_path: str = "test_images/image_2.jpg"
  features_1_path: str = "test_features/image_1.delf"
  features_2_path: str = "test_features/image_2.delf"
  output_image: str = "test_match.png"
  distance_threshold: float = 0.8
  seed: int = 0
  homography_path: str | None = None
  homography_tolerance_px: float = 10.0


def match_images(config: MatchImagesConfig) -> int:
  """Matches two images' .delf files, prints the counts and writes the picture.

  Returns:
    0 on success, 1 when an input file is missing or unreadable (one line on stderr).
  """
  for label, path in (
    ("features_1_path", config.features_1_path),
    ("features_2_path", config.features_2_path),
    ("image_1_path", config.image_1_path),
    ("image_2_path", config.image_2_path),
  ):
    if not os.path.isfile(path):
      print(f"Error: --{label} file not found: {path}", file=sys.stderr)
      return 1
  ground_truth = None
  if config.homography_path is not None:
    if not config.homography_tolerance_px > 0:
      print(
        "Error: --homography_tolerance_px must be a positive number of pixels, got "
        f"{config.homography_tolerance_px:g}",
        file=sys.stderr,
      )
      return 1
    try:
      ground_truth = homography.load_homography(config.homography_path)
    except homography.HomographyFileError as e:
      print(f"Error: --homography_path: {e}", file=sys.stderr)
      return 1
  features = []
  for index, path in ((1, config.features_1_path), (2, config.features_2_path)):
    try:
      features.append(matching.LocalFeatures.from_file(path))
    except Exception as e:
      print(f"Error: cannot read features from {path}: {e}", file=sys.stderr)
      return 1
    print(f"Loaded image {index}'s {features[-1].num_features} features")
  features_1, features_2 = features
  if (
    features_1.num_features
    and features_2.num_features
    and features_1.descriptors.shape[1] != features_2.descriptors.shape[1]
  ):
    print(
      f"Error: descriptor dimensions differ: {features_1.descriptors.shape[1]} in "
      f"{config.features_1_path} vs {features_2.descriptors.shape[1]} in "
      f"{config.features_2_path}",
      file=sys.stderr,
    )
    return 1

  result = matching.match(
    features_1, features_2, distance_threshold=config.distance_threshold, seed=config.seed
  )
  if result.num_putative < 3:
    print(
      f"Too few putative matches ({result.num_putative}; RANSAC needs at least 3): "
      "no geometric verification"
    )
  print(f"Found {result.num_inliers} inliers")
  check = None
  if ground_truth is not None:
    check = homography.check_inliers(
      ground_truth,
      features_1.locations,
      features_2.locations,
      result.pairs,
      result.inliers,
      config.homography_tolerance_px,
    )
    print(check.summary())

  images = []
  for path in (config.image_1_path, config.image_2_path):
    try:
      images.append(_load_rgb(path))
    except Exception as e:
      print(f"Error: cannot read image {path}: {e}", file=sys.stderr)
      return 1
  try:
    plot_matches(
      config.output_image,
      images[0],
      images[1],
      features_1.locations,
      features_2.locations,
      result.pairs,
      result.inliers,
      check=check,
    )
  except (ValueError, OSError) as e:
    print(f"Error: cannot write {config.output_image}: {e}", file=sys.stderr)
    return 1
  return 0
