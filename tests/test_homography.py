"""Ground-truth homographies: file formats, projection in DELF's (y, x) order, inlier check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from delf import homography

# A perspective homography on (x, y, 1): rotation, scale, shear, translation and a
# non-zero last row, so swapping x and y or dropping the division changes the result.
PERSPECTIVE = np.array([[0.9, -0.2, 30.0], [0.15, 1.05, -12.0], [4e-4, -2e-4, 1.0]])


def _by_hand(matrix, x, y):
  """H applied to one (x, y) point, written out."""
  w = matrix[2, 0] * x + matrix[2, 1] * y + matrix[2, 2]
  return (
    (matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]) / w,
    (matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]) / w,
  )


def test_project_locations_uses_delf_yx_order():
  translation = np.array([[1.0, 0, 5.0], [0, 1.0, -3.0], [0, 0, 1.0]])  # x + 5, y - 3
  # A DELF location (y=10, x=20) moves to (y=7, x=25).
  np.testing.assert_allclose(
    homography.project_locations(translation, [[10.0, 20.0]]), [[7.0, 25.0]]
  )
  np.testing.assert_allclose(homography.project_xy(translation, [[20.0, 10.0]]), [[25.0, 7.0]])
  points_xy = np.array([[0.0, 0.0], [100.0, 40.0], [250.0, 310.0]])
  expected = [_by_hand(PERSPECTIVE, x, y) for x, y in points_xy]
  np.testing.assert_allclose(homography.project_xy(PERSPECTIVE, points_xy), expected)
  np.testing.assert_allclose(
    homography.project_locations(PERSPECTIVE, points_xy[:, ::-1]), np.array(expected)[:, ::-1]
  )


def test_point_mapped_to_infinity_is_never_correct():
  # The last row vanishes at x = 1000: that point has no finite image.
  matrix = np.array([[1.0, 0, 0], [0, 1.0, 0], [-1e-3, 0, 1.0]])
  errors = homography.reprojection_errors(matrix, [[5.0, 1000.0]], [[5.0, 1000.0]])
  assert errors.tolist() == [np.inf]


def _planted_case():
  """Pairs under PERSPECTIVE with known errors: 12 correct (<= 10 px), 5 wrong, 3 non-inliers."""
  rng = np.random.default_rng(0)
  points_1_xy = rng.uniform(0, 400, [20, 2])
  points_2_xy = homography.project_xy(PERSPECTIVE, points_1_xy)
  # Displacement of each image-2 point from its true position, in px, at a random angle.
  correct = [0, 0.5, 2, 3, 5, 7, 8, 9, 9.9, 9.97, 4, 1]
  wrong = [10.1, 12, 25, 80, 300]
  not_inliers = [0.0, 50.0, 1.0]
  distances = np.array(correct + wrong + not_inliers)
  angles = rng.uniform(0, 2 * np.pi, 20)
  points_2_xy = points_2_xy + distances[:, None] * np.c_[np.cos(angles), np.sin(angles)]
  inliers = np.ones(20, dtype=bool)
  inliers[17:] = False  # Non-inliers are never counted, however close they lie.
  # DELF locations are (y, x); image-2 keypoints in reverse order to exercise `pairs`.
  locations_1 = points_1_xy[:, ::-1]
  locations_2 = points_2_xy[::-1, ::-1]
  pairs = np.c_[np.arange(20), 19 - np.arange(20)]
  return locations_1, locations_2, pairs, inliers, distances


def test_check_inliers_counts_the_planted_split():
  locations_1, locations_2, pairs, inliers, distances = _planted_case()
  check = homography.check_inliers(PERSPECTIVE, locations_1, locations_2, pairs, inliers, 10.0)
  np.testing.assert_allclose(check.errors, distances, atol=1e-6)
  assert check.correct.tolist() == [True] * 12 + [False] * 8
  assert (check.num_inliers, check.num_correct, check.num_wrong) == (17, 12, 5)
  assert check.percent_correct == 71  # 12 / 17 = 70.6 %
  assert check.summary() == (
    "Found 17 inliers; 12 (71 %) within 10 px of the ground-truth homography"
  )
  # A tighter tolerance moves exactly the planted pairs between 5 and 10 px.
  tight = homography.check_inliers(PERSPECTIVE, locations_1, locations_2, pairs, inliers, 4.5)
  assert tight.num_correct == 6 and tight.summary().endswith(
    "within 4.5 px of the ground-truth homography"
  )


def test_check_inliers_with_swapped_axes_finds_nothing_correct():
  # The same data read as (x, y) instead of (y, x): the convention matters.
  locations_1, locations_2, pairs, inliers, _ = _planted_case()
  check = homography.check_inliers(
    PERSPECTIVE, locations_1[:, ::-1], locations_2[:, ::-1], pairs, inliers
  )
  assert check.num_correct <= 1


def test_summary_of_the_issue_example_and_edge_percentages():
  def summary(num_inliers, num_correct, tolerance=10.0):
    inliers = np.zeros(200, dtype=bool)
    inliers[:num_inliers] = True
    correct = np.zeros(200, dtype=bool)
    correct[:num_correct] = True
    return homography.InlierCheck(inliers, correct, np.zeros(200), tolerance).summary()

  assert summary(56, 52) == (
    "Found 56 inliers; 52 (93 %) within 10 px of the ground-truth homography"
  )
  # Never "100 %" unless all are correct, never "0 %" unless none is.
  assert "199 (99 %)" in summary(200, 199)
  assert "1 (1 %)" in summary(200, 1)
  assert "0 (0 %)" in summary(0, 0)
  assert "200 (100 %)" in summary(200, 200)
  assert "within 2.5 px" in summary(3, 1, 2.5)


def test_check_inliers_rejects_a_non_positive_tolerance():
  with pytest.raises(ValueError, match="positive"):
    homography.check_inliers(np.eye(3), [[0, 0]], [[0, 0]], [[0, 0]], [True], 0.0)


@pytest.mark.parametrize("kind", ["json", "text", "xml"])
def test_load_formats(tmp_path, kind):
  if kind == "json":
    path = tmp_path / "h.json"
    homography.save_homography(path, PERSPECTIVE, image_1="a.jpg")
    assert json.loads(path.read_text())["image_1"] == "a.jpg"
  elif kind == "text":
    path = tmp_path / "h.txt"
    rows = "\n".join(" ".join(repr(float(v)) for v in row) for row in PERSPECTIVE)
    path.write_text(f"# image 1 -> image 2\n{rows}\n")
  else:
    path = tmp_path / "h.xml"
    data = " ".join(repr(float(v)) for v in PERSPECTIVE.ravel())
    path.write_text(
      '<?xml version="1.0"?>\n<opencv_storage>\n<H12 type_id="opencv-matrix">\n'
      f"  <rows>3</rows>\n  <cols>3</cols>\n  <dt>d</dt>\n  <data>\n {data} </data></H12>\n"
      "</opencv_storage>\n"
    )
  np.testing.assert_array_equal(homography.load_homography(path), PERSPECTIVE)


def test_load_real_opencv_file(shared_dir):
  path = shared_dir / "data" / "real" / "opencv" / "H1to3p.xml"
  if not path.is_file():
    pytest.skip(f"{path} not found")
  matrix = homography.load_homography(path)
  np.testing.assert_allclose(matrix[0], [7.6285898e-01, -2.9922929e-01, 2.2567123e02])
  np.testing.assert_allclose(matrix[2], [3.4663091e-04, -1.4364524e-05, 1.0])


@pytest.mark.parametrize(
  "name, content, problem",
  [
    (
      "h.json",
      '{"homography": [[1, 0, 0], [0, 1, 0]]}',
      "expected 3 rows of 3 numbers, got 2 rows",
    ),
    ("h.json", '{"matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}', 'no "homography" key'),
    ("h.json", '{"homography": [[1, 0, 0], [0, 1, 0], [0, 0, 1]', "malformed homography file"),
    ("h.json", '{"homography": [[1, 0, 0], [0, 1], [0, 0, 1]]}', "rows of [3, 2, 3] numbers"),
    ("h.txt", "1 0 0\n0 1 zero\n0 0 1\n", "could not convert string to float"),
    ("h.txt", "", "got 0 rows"),
    ("h.txt", "1 0 0\n0 1 0\n0 0 nan\n", "non-finite"),
    ("h.txt", "1 2 3\n2 4 6\n0 0 1\n", "singular"),
    ("h.xml", "<opencv_storage></opencv_storage>", "found 0"),
  ],
)
def test_bad_files_give_one_line_naming_the_file(tmp_path, name, content, problem):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(homography.HomographyFileError) as error:
    homography.load_homography(path)
  message = str(error.value)
  assert "\n" not in message and str(path) in message and problem in message


def test_missing_file(tmp_path):
  path = tmp_path / "nope.json"
  with pytest.raises(homography.HomographyFileError, match=f"not found: {path}"):
    homography.load_homography(path)
