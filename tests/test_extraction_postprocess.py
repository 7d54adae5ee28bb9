"""Post-processing test vectors (inference.md §8.5) and TF-semantics L2 normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from delf import datum_io
from delf.extraction import pca, postprocess
from delf.protos import delf_config_pb2

PCA_DATA = np.array([[1, 2, -2], [-5, 0, 3], [-1, 2, 0], [0, 4, -1]], np.float32)
PCA_MATRIX = np.array([[2, 0, -1], [0, 1, 1], [-1, 1, 3]], np.float32)
PCA_MEAN = np.array([1, 2, 3], np.float32)
PCA_EXPECTED = np.array([[2.5, -5.0], [-6.0, -2.0], [-0.5, -3.0], [1.0, -2.0]], np.float32)


def test_normalize_pixel_values_exact():
  image = np.array([[[3, 255, 0], [34, 12, 5]], [[45, 5, 65], [56, 77, 89]]], np.uint8)
  expected = [[[-1.0, 125.0, -2.5], [14.5, 3.5, 0.0]], [[20.0, 0.0, 30.0], [25.5, 36.0, 42.0]]]
  result = postprocess.NormalizePixelValues(image, pixel_value_offset=5.0, pixel_value_scale=2.0)
  assert result.dtype == np.float32
  np.testing.assert_array_equal(result, expected)


def test_calculate_receptive_boxes_exact():
  boxes = postprocess.CalculateReceptiveBoxes(height=1, width=2, rf=291, stride=32, padding=145)
  np.testing.assert_array_equal(boxes, [[-145, -145, 145, 145], [-145, -113, 145, 177]])


def test_calculate_keypoint_centers_exact():
  boxes = [[-10, 0, 11, 21], [-2.5, 5, 18.5, 26], [45, -2.5, 66, 18.5]]
  np.testing.assert_array_equal(
    postprocess.CalculateKeypointCenters(boxes), [[0.5, 10.5], [8.0, 15.5], [55.5, 8.0]]
  )


def test_export_receptive_field_functions_agree():
  """The TF versions inside the exported graph (delf.export) give the same vectors."""
  from delf.export import receptive_field

  np.testing.assert_array_equal(
    receptive_field.CalculateReceptiveBoxes(1, 2, 291, 32, 145).numpy(),
    postprocess.CalculateReceptiveBoxes(1, 2, 291, 32, 145),
  )
  boxes = np.array([[-10, 0, 11, 21], [-2.5, 5, 18.5, 26]], np.float32)
  np.testing.assert_array_equal(
    receptive_field.CalculateKeypointCenters(boxes).numpy(),
    postprocess.CalculateKeypointCenters(boxes),
  )


def test_apply_pca_and_whitening_exact():
  parameters = pca.PcaParameters(
    mean=PCA_MEAN,
    matrix=PCA_MATRIX,
    dim=2,
    use_whitening=True,
    variances=np.array([4, 1], np.float32),
  )
  np.testing.assert_array_equal(pca.ApplyPcaAndWhitening(PCA_DATA, parameters), PCA_EXPECTED)
  with pytest.raises(ValueError, match="do not fit the PCA parameters of dimension 3"):
    pca.ApplyPcaAndWhitening(np.ones([4, 5]), parameters)


def test_l2_normalize_has_tensorflow_semantics():
  x = np.array([[3, 4], [0, 0], [1e-7, 0]], np.float32)
  result = postprocess.l2_normalize(x, axis=1)
  np.testing.assert_allclose(result[0], [0.6, 0.8])
  np.testing.assert_array_equal(result[1], [0, 0])  # No NaN for a zero row.
  # sum(x^2) = 1e-14 < 1e-12: divided by sqrt(1e-12) = 1e-6, not normalised to 1.
  np.testing.assert_allclose(result[2], [0.1, 0], rtol=1e-5)


def test_post_process_descriptors_and_global():
  parameters = pca.PcaParameters(mean=PCA_MEAN, matrix=PCA_MATRIX, dim=2)
  raw = PCA_DATA * 10
  unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
  projected = (unit - PCA_MEAN) @ PCA_MATRIX[:2].T
  np.testing.assert_allclose(
    postprocess.PostProcessDescriptors(raw, True, parameters),
    projected / np.linalg.norm(projected, axis=1, keepdims=True),
    rtol=1e-6,
  )
  np.testing.assert_allclose(postprocess.PostProcessDescriptors(raw, False), unit, rtol=1e-6)
  summed = unit.sum(axis=0)
  np.testing.assert_allclose(
    postprocess.PostProcessGlobalDescriptors(raw, False), summed / np.linalg.norm(summed), rtol=1e-6
  )
  boxes = np.array([[0, 0, 2, 4]] * 4, np.float32)
  centres, descriptors = postprocess.DelfFeaturePostProcessing(boxes, raw, False)
  np.testing.assert_array_equal(centres, [[1, 2]] * 4)
  np.testing.assert_allclose(descriptors, unit, rtol=1e-6)


def test_load_pca_parameters_squeezes_and_validates(tmp_path):
  paths = {}
  for name, array in (
    ("mean", PCA_MEAN),
    ("matrix", PCA_MATRIX),
    ("variances", np.array([[4, 1, 9]], np.float32)),
  ):
    paths[name] = str(tmp_path / f"{name}.datum")
    datum_io.WriteToFile(array, paths[name])
  message = delf_config_pb2.DelfPcaParameters(
    mean_path=paths["mean"],
    projection_matrix_path=paths["matrix"],
    pca_dim=2,
    use_whitening=True,
    pca_variances_path=paths["variances"],
  )
  loaded = pca.load_pca_parameters(message)
  assert loaded.variances.shape == (3,)
  np.testing.assert_array_equal(pca.ApplyPcaAndWhitening(PCA_DATA, loaded), PCA_EXPECTED * [1, 1])
  message.pca_dim = 4
  with pytest.raises(ValueError, match="pca_dim 4"):
    pca.load_pca_parameters(message)
  message.pca_dim = 2
  message.pca_variances_path = str(tmp_path / "nope.datum")
  with pytest.raises(FileNotFoundError, match=r"nope\.datum"):
    pca.load_pca_parameters(message)
  message.use_whitening = False  # Variances are read only when whitening.
  assert pca.load_pca_parameters(message).variances is None
