"""Tests of delf.matching (nearest neighbours + affine RANSAC) and match_images.py."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from delf import feature_io, homography, matching
from tests import cli_harness

run_script = cli_harness.run_script

AFFINE = np.array([[0.9, 0.25, 12.0], [-0.15, 1.1, -7.0], [0.0, 0.0, 1.0]])


def _unit_rows(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
  return (np.c_[points, np.ones(len(points))] @ matrix.T)[:, :2]


def _synthetic_pair(seed=0, n=400, dim=64, outlier_fraction=0.5, noise=0.5):
  """Image-2 features = image-1 features moved by AFFINE, half replaced by outliers.

  Returns (features_1, features_2, true inlier mask over features_2 order).
  """
  rng = np.random.default_rng(seed)
  descriptors_1 = _unit_rows(rng.standard_normal([n, dim]))
  locations_1 = rng.uniform(0, 500, [n, 2])
  permutation = rng.permutation(n)
  descriptors_2 = _unit_rows(descriptors_1[permutation] + 0.01 * rng.standard_normal([n, dim]))
  locations_2 = _apply(AFFINE, locations_1[permutation]) + rng.uniform(-noise, noise, [n, 2])
  num_outliers = int(outlier_fraction * n)
  # Outliers: descriptors still match, but the locations are far from the transform.
  outliers = rng.choice(n, num_outliers, replace=False)
  shift = rng.uniform(60, 300, [num_outliers, 2]) * rng.choice([-1, 1], [num_outliers, 2])
  locations_2[outliers] += shift
  truth = np.ones(n, dtype=bool)
  truth[outliers] = False
  return (
    matching.LocalFeatures(locations_1, descriptors_1),
    matching.LocalFeatures(locations_2, descriptors_2),
    truth,
    permutation,
  )


def test_ransac_recovers_known_affine_with_half_outliers():
  features_1, features_2, truth, permutation = _synthetic_pair()
  result = matching.match(features_1, features_2, distance_threshold=0.8, seed=0)
  # Putative matches: every image-2 feature finds its true partner, in image-2 order.
  np.testing.assert_array_equal(result.pairs[:, 1], np.arange(len(truth)))
  np.testing.assert_array_equal(result.pairs[:, 0], permutation)
  np.testing.assert_array_equal(result.inliers, truth)
  assert result.num_inliers == truth.sum() == 200
  # Noise is uniform +-0.5 px: the least-squares refit is within a fraction of that.
  np.testing.assert_allclose(result.transform[:, :2], AFFINE[:, :2], atol=2e-3)
  np.testing.assert_allclose(result.transform[:, 2], AFFINE[:, 2], atol=0.2)


def test_ransac_is_deterministic_with_a_seed():
  features_1, features_2, _, _ = _synthetic_pair(seed=3, noise=15.0)
  first = matching.match(features_1, features_2, seed=7)
  second = matching.match(features_1, features_2, seed=7)
  np.testing.assert_array_equal(first.inliers, second.inliers)
  np.testing.assert_array_equal(first.transform, second.transform)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ransac_matches_scikit_image_for_the_same_seed(seed):
  from skimage.measure import ransac
  from skimage.transform import AffineTransform

  features_1, features_2, _, _ = _synthetic_pair(seed=seed + 10, noise=18.0, outlier_fraction=0.7)
  pairs = matching.putative_matches(features_1.descriptors, features_2.descriptors)
  source = features_1.locations[pairs[:, 0]]
  destination = features_2.locations[pairs[:, 1]]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model, expected = ransac(
      (source, destination), AffineTransform, 3, 20.0, max_trials=1000, rng=seed
    )
  transform, inliers = matching.ransac_affine(source, destination, seed=seed)
  np.testing.assert_array_equal(inliers, expected)
  # Both refit on the same inliers with the same estimator.
  np.testing.assert_allclose(transform, model.params, rtol=1e-9, atol=1e-9)


def test_nearest_neighbours_equal_scipy_kdtree():
  rng = np.random.default_rng(5)
  descriptors_1 = _unit_rows(rng.standard_normal([300, 40]))
  descriptors_2 = _unit_rows(rng.standard_normal([250, 40]))
  descriptors_2[:100] = _unit_rows(descriptors_1[:100] + 0.2 * rng.standard_normal([100, 40]))
  tree = cKDTree(descriptors_1)
  _, indices = tree.query(descriptors_2, distance_upper_bound=0.8)
  expected = np.array([(indices[i], i) for i in range(250) if indices[i] != 300])
  pairs = matching.putative_matches(descriptors_1, descriptors_2, 0.8)
  np.testing.assert_array_equal(pairs, expected)
  ours_d, ours_i = matching.nearest_neighbors(descriptors_1, descriptors_2, k=2)
  ref_d, ref_i = tree.query(descriptors_2, k=2)
  np.testing.assert_array_equal(ours_i, ref_i)
  np.testing.assert_allclose(ours_d, ref_d, rtol=1e-12)
  # Ratio test: d1 < 0.8 * d2 with the first neighbour.
  keep = ref_d[:, 0] < 0.8 * ref_d[:, 1]
  expected_ratio = np.stack([ref_i[keep, 0], np.flatnonzero(keep)], axis=1)
  np.testing.assert_array_equal(
    matching.putative_matches(descriptors_1, descriptors_2, 0.8, use_ratio_test=True),
    expected_ratio,
  )


def test_bounded_search_equals_scipy_on_random_cases():
  # The distance bound prunes rows before the exact check; the pairs must stay
  # SciPy's, including near-threshold cases (noise of the order of the bound).
  rng = np.random.default_rng(4)
  for _ in range(30):
    index = _unit_rows(rng.standard_normal([int(rng.integers(1, 80)), 16]))
    count = int(rng.integers(1, 80))
    query = index[rng.integers(0, len(index), count)] + rng.normal(
      scale=rng.uniform(0.0, 0.5), size=(count, 16)
    )
    threshold = float(rng.uniform(0.2, 1.2))
    _, indices = cKDTree(index).query(query, distance_upper_bound=threshold)
    found = np.flatnonzero(indices != len(index))
    expected = np.stack([indices[found], found], axis=1).reshape(-1, 2)
    np.testing.assert_array_equal(matching.putative_matches(index, query, threshold), expected)


def test_nearest_neighbour_is_exact_beyond_float32_resolution():
  """Candidates tied in float32 are decided by the exact float64 distance, like cKDTree."""
  query = np.zeros([1, 8])
  index = np.zeros([3, 8])
  index[0, 0] = 0.5 + 1e-12  # Equal to index 1 in float32, farther in float64.
  index[1, 1] = 0.5
  index[2, 2] = 0.9
  distances, indices = matching.nearest_neighbors(index, query, k=2)
  np.testing.assert_array_equal(indices, [[1, 0]])
  assert distances[0, 0] == 0.5 and distances[0, 1] == 0.5 + 1e-12


def test_distance_bound_is_strict():
  descriptors_1 = np.array([[0.0, 0.0]])
  descriptors_2 = np.array([[0.5, 0.0], [0.0, 0.25]])
  # Distances 0.5 and 0.25: the bound 0.5 keeps only the second.
  np.testing.assert_array_equal(
    matching.putative_matches(descriptors_1, descriptors_2, 0.5), [[0, 1]]
  )
  np.testing.assert_array_equal(
    matching.putative_matches(descriptors_1, descriptors_2, 0.5000001), [[0, 0], [0, 1]]
  )


def test_ratio_test_single_index_feature_keeps_the_match_and_is_strict():
  single = np.array([[0.0, 0.0]])
  queries = np.array([[3.0, 4.0]])  # Far away, but d2 = inf with one feature.
  np.testing.assert_array_equal(
    matching.putative_matches(single, queries, 0.8, use_ratio_test=True), [[0, 0]]
  )
  two = np.array([[0.0, 0.0], [2.0, 0.0]])
  # d1 = 0.8, d2 = 1.2 -> 0.8 < 0.8 * 1.2 = 0.96 kept; d1 = 1, d2 = 1 -> not kept.
  queries = np.array([[0.8, 0.0], [1.0, 0.0]])
  np.testing.assert_array_equal(
    matching.putative_matches(two, queries, 0.8, use_ratio_test=True), [[0, 0]]
  )


def test_fewer_than_three_putative_matches_gives_no_transform():
  features_1 = matching.LocalFeatures(np.array([[1.0, 2.0], [3.0, 4.0]]), np.eye(2))
  features_2 = matching.LocalFeatures(np.array([[5.0, 6.0], [7.0, 8.0]]), np.eye(2))
  result = matching.match(features_1, features_2)
  assert result.num_putative == 2
  assert result.transform is None
  assert result.num_inliers == 0
  assert result.inliers.shape == (2,)


def test_empty_features_and_dimension_mismatch(tmp_path):
  path = tmp_path / "empty.delf"
  feature_io.WriteToFile(str(path), *[np.array([])] * 4)
  empty = matching.LocalFeatures.from_file(path)
  assert empty.num_features == 0
  other = matching.LocalFeatures(np.zeros([4, 2]), np.ones([4, 8]))
  result = matching.match(empty, other)
  assert result.pairs.shape == (0, 2) and result.num_inliers == 0 and result.transform is None
  with pytest.raises(ValueError, match="dimensions differ"):
    matching.match(other, matching.LocalFeatures(np.zeros([4, 2]), np.ones([4, 9])))


def test_ransac_with_collinear_points_only_finds_no_model():
  source = np.stack([np.arange(10.0), 2 * np.arange(10.0)], axis=1)
  transform, inliers = matching.ransac_affine(source, source + 1.0, seed=0)
  assert transform is None and not inliers.any()


def test_matching_does_not_import_tensorflow():
  code = "import sys, delf.matching, delf.match_plot; print('tensorflow' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------
# match_images.py


def _write_case(tmp_path, features_1, features_2):
  paths = {}
  for index, features in ((1, features_1), (2, features_2)):
    feature_path = tmp_path / f"image_{index}.delf"
    n = features.num_features
    feature_io.WriteToFile(
      str(feature_path), features.locations, np.ones(n), features.descriptors, np.ones(n)
    )
    image_path = tmp_path / f"image_{index}.jpg"
    Image.fromarray(np.full([520 + 40 * index, 600, 3], 90 * index, np.uint8)).save(image_path)
    paths[f"features_{index}_path"] = str(feature_path)
    paths[f"image_{index}_path"] = str(image_path)
  return paths


@pytest.mark.parametrize("extension", ["png", "jpg"])
def test_match_images_cli(tmp_path, capsys, extension):
  features_1, features_2, truth, _ = _synthetic_pair(n=120)
  paths = _write_case(tmp_path, features_1, features_2)
  output = tmp_path / f"matched.{extension}"
  assert run_script("match_images", output_image=str(output), **paths) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines == [
    "Loaded image 1's 120 features",
    "Loaded image 2's 120 features",
    f"Found {truth.sum()} inliers",
  ]
  with Image.open(output) as image:
    assert image.format == {"png": "PNG", "jpg": "JPEG"}[extension]
    assert image.width > 100 and image.height > 100


def test_match_images_too_few_matches_still_writes_image(tmp_path, capsys):
  features_1, features_2, _, _ = _synthetic_pair(n=60)
  paths = _write_case(tmp_path, features_1, features_2)
  output = tmp_path / "out.png"
  # A tiny distance threshold leaves no putative match.
  code = run_script("match_images", output_image=str(output), distance_threshold=1e-6, **paths)
  assert code == 0
  out = capsys.readouterr().out
  assert "Too few putative matches (0" in out
  assert out.splitlines()[-1] == "Found 0 inliers"
  assert output.stat().st_size > 0


def test_match_images_missing_file_is_one_line(tmp_path, capsys):
  features_1, features_2, _, _ = _synthetic_pair(n=30)
  paths = _write_case(tmp_path, features_1, features_2)
  paths["features_2_path"] = str(tmp_path / "missing.delf")
  assert run_script("match_images", output_image=str(tmp_path / "o.png"), **paths) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "missing.delf" in err[0] and "not found" in err[0]
  assert not (tmp_path / "o.png").exists()


# The synthetic pairs' AFFINE acts on (y, x, 1); a homography file acts on (x, y, 1).
_SWAP_XY = np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])
AFFINE_XY = _SWAP_XY @ AFFINE @ _SWAP_XY


def _colour_pixels(path):
  with Image.open(path) as image:
    rgb = np.asarray(image.convert("RGB")).astype(int)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  return {
    "red": int(np.sum((r > 180) & (g < 90) & (b < 90))),
    "green": int(np.sum((g > 150) & (r < 120) & (b < 120))),
    "blue": int(np.sum((b > 150) & (r < 90) & (g < 90))),
  }


def test_match_images_with_ground_truth_homography(tmp_path, capsys):
  features_1, features_2, truth, _ = _synthetic_pair(n=120)
  # Move 6 true matches 14 px off their true position: still RANSAC inliers (residual
  # threshold 20 px) but wrong under a 10 px tolerance.
  rng = np.random.default_rng(1)
  moved = rng.choice(np.flatnonzero(truth), 6, replace=False)
  angles = rng.uniform(0, 2 * np.pi, 6)
  features_2.locations[moved] += 14.0 * np.c_[np.sin(angles), np.cos(angles)]
  paths = _write_case(tmp_path, features_1, features_2)
  homography_path = tmp_path / "pair_homography.json"
  homography.save_homography(homography_path, AFFINE_XY)
  output = tmp_path / "matched.png"
  code = run_script(
    "match_images",
    output_image=str(output),
    homography_path=str(homography_path),
    **paths,
  )
  assert code == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines == [
    "Loaded image 1's 120 features",
    "Loaded image 2's 120 features",
    "Found 60 inliers",
    "Found 60 inliers; 54 (90 %) within 10 px of the ground-truth homography",
  ]
  assert truth.sum() == 60
  colours = _colour_pixels(output)
  assert colours["green"] > 500 and colours["red"] > 50, colours
  # A tighter tolerance: the uniform +-0.5 px noise stays within 1 px, the moved ones not.
  code = run_script(
    "match_images",
    output_image=str(tmp_path / "tight.png"),
    homography_path=str(homography_path),
    homography_tolerance_px=1,
    **paths,
  )
  assert code == 0
  assert capsys.readouterr().out.splitlines()[-1] == (
    "Found 60 inliers; 54 (90 %) within 1 px of the ground-truth homography"
  )
  # Without the flag: the reference's output, blue lines only.
  assert run_script("match_images", output_image=str(tmp_path / "plain.png"), **paths) == 0
  assert capsys.readouterr().out.splitlines()[-1] == "Found 60 inliers"
  colours = _colour_pixels(tmp_path / "plain.png")
  assert colours["red"] == 0 and colours["green"] == 0 and colours["blue"] > 500, colours


def test_match_images_homography_in_the_wrong_axis_order_counts_few_correct(tmp_path, capsys):
  features_1, features_2, truth, _ = _synthetic_pair(n=120)
  paths = _write_case(tmp_path, features_1, features_2)
  homography_path = tmp_path / "h.txt"
  # AFFINE itself read as an (x, y) homography: the right numbers, the wrong convention.
  homography_path.write_text("\n".join(" ".join(str(v) for v in row) for row in AFFINE))
  code = run_script(
    "match_images",
    output_image=str(tmp_path / "o.png"),
    homography_path=str(homography_path),
    **paths,
  )
  assert code == 0
  last = capsys.readouterr().out.splitlines()[-1]
  assert last.startswith(f"Found {truth.sum()} inliers; ")
  assert int(last.split("; ")[1].split(" ")[0]) <= 3, last


@pytest.mark.parametrize(
  "content, problem",
  [(None, "homography file not found"), ("1 0 0\n0 1 0\n", "expected 3 rows of 3 numbers")],
)
def test_match_images_bad_homography_file_is_one_line(tmp_path, capsys, content, problem):
  features_1, features_2, _, _ = _synthetic_pair(n=30)
  paths = _write_case(tmp_path, features_1, features_2)
  homography_path = tmp_path / "h.txt"
  if content is not None:
    homography_path.write_text(content)
  output = tmp_path / "o.png"
  code = run_script(
    "match_images", output_image=str(output), homography_path=str(homography_path), **paths
  )
  assert code == 1
  captured = capsys.readouterr()
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and str(homography_path) in err[0] and problem in err[0], err
  assert "--homography_path" in err[0]
  assert captured.out == "" and not output.exists()


def test_match_images_flag_defaults():
  from absl import flags

  cli_harness.load_script("match_images")

  defaults = {
    name: flags.FLAGS[name].default
    for name in (
      "image_1_path",
      "image_2_path",
      "features_1_path",
      "features_2_path",
      "output_image",
      "distance_threshold",
      "seed",
      "homography_path",
      "homography_tolerance_px",
    )
  }
  assert defaults == {
    "image_1_path": "test_images/image_1.jpg",
    "image_2_path": "test_images/image_2.jpg",
    "features_1_path": "test_features/image_1.delf",
    "features_2_path": "test_features/image_2.delf",
    "output_image": "test_match.png",
    "distance_threshold": 0.8,
    "seed": 0,
    "homography_path": None,
    "homography_tolerance_px": 10.0,
  }


def test_match_images_non_positive_tolerance_is_one_line(tmp_path, capsys):
  features_1, features_2, _, _ = _synthetic_pair(n=30)
  paths = _write_case(tmp_path, features_1, features_2)
  homography_path = tmp_path / "h.json"
  homography.save_homography(homography_path, AFFINE_XY)
  code = run_script(
    "match_images",
    output_image=str(tmp_path / "o.png"),
    homography_path=str(homography_path),
    homography_tolerance_px=0,
    **paths,
  )
  assert code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "--homography_tolerance_px must be a positive" in err[0], err
  assert not (tmp_path / "o.png").exists()
