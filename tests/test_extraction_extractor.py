"""MakeExtractor against toy SavedModels with the reference's signatures.

The toy models' outputs are simple functions of their inputs (image size, scales,
threshold, feature count, global scale indices), so every post-processing step
of inference.md §2.4 can be checked against hand-computed values.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from delf import datum_io
from delf.protos import delf_config_pb2

tf = pytest.importorskip("tensorflow")

from delf.extraction import extractor as extractor_lib  # noqa: E402

# Raw local descriptors of the toy model (3 features, 4-D).
RAW_FEATURES = np.array([[3, 4, 0, 0], [0, 0, -5, 12], [1, 1, 1, 1]], np.float32)
# Raw per-scale global rows, indexed by scale index (up to 8 scales, 3-D).
GLOBAL_TABLE = np.array(
  [[1, 2, 2], [0, 3, 4], [2, -1, 2], [5, 0, 0], [1, 1, -1], [0, 0, 7], [3, 4, 12], [1, 0, 0]],
  np.float32,
)


def toy_local_outputs(image, scales, max_feature_num, abs_thres):
  """boxes depend on the image size; scores on the threshold; count on max_feature_num.

  A threshold of 1e6 or more is above every score of this toy model: no feature.
  """
  shape = tf.cast(tf.shape(image), tf.float32)
  height, width = shape[0], shape[1]
  boxes = tf.stack(
    [
      tf.stack([0.0, 0.0, height, width]),
      tf.constant([2.0, 4.0, 6.0, 8.0]),
      tf.constant([-10.0, -10.0, 10.0, 10.0]),
    ]
  )
  feature_scales = 1.0 / tf.stack([scales[0], scales[-1], scales[0]])
  scores = abs_thres + tf.constant([[3.0], [2.0], [1.0]])
  n = tf.where(abs_thres >= 1e6, 0, tf.minimum(max_feature_num, 3))
  return {
    "boxes": boxes[:n],
    "features": tf.constant(RAW_FEATURES)[:n],
    "scales": feature_scales[:n],
    "scores": scores[:n],
  }


def toy_global_outputs(scales, global_scales_ind):
  rows = tf.gather(tf.constant(GLOBAL_TABLE), global_scales_ind)
  return rows * tf.gather(scales, global_scales_ind)[:, None]


IMAGE = tf.TensorSpec([None, None, 3], tf.uint8, name="input_image")
SCALES = tf.TensorSpec([None], tf.float32, name="input_scales")
MAX_NUM = tf.TensorSpec([], tf.int32, name="input_max_feature_num")
THRES = tf.TensorSpec([], tf.float32, name="input_abs_thres")
GLOBAL_IND = tf.TensorSpec([None], tf.int32, name="input_global_scales_ind")


class ToyLocal(tf.Module):
  @tf.function(input_signature=[IMAGE, SCALES, MAX_NUM, THRES])
  def ExtractFeatures(self, input_image, input_scales, input_max_feature_num, input_abs_thres):
    return toy_local_outputs(input_image, input_scales, input_max_feature_num, input_abs_thres)


class ToyLocalAndGlobal(tf.Module):
  @tf.function(input_signature=[IMAGE, SCALES, MAX_NUM, THRES, GLOBAL_IND])
  def ExtractFeatures(
    self, input_image, input_scales, input_max_feature_num, input_abs_thres, input_global_scales_ind
  ):
    outputs = toy_local_outputs(input_image, input_scales, input_max_feature_num, input_abs_thres)
    outputs["global_descriptors"] = toy_global_outputs(input_scales, input_global_scales_ind)
    return outputs


class ToyGlobal(tf.Module):
  @tf.function(input_signature=[IMAGE, SCALES, GLOBAL_IND])
  def ExtractFeatures(self, input_image, input_scales, input_global_scales_ind):
    del input_image
    return {"global_descriptors": toy_global_outputs(input_scales, input_global_scales_ind)}


class ToyKaggle(tf.Module):
  @tf.function(input_signature=[IMAGE])
  def ExtractFeatures(self, input_image):
    return {"global_descriptor": tf.reduce_mean(tf.cast(input_image, tf.float32), [0, 1])}


def save_tf2(module: tf.Module, path: str) -> str:
  tf.saved_model.save(module, path, signatures={"serving_default": module.ExtractFeatures})
  return path


def save_tf1_local_and_global(path: str) -> str:
  """A TF1-format SavedModel (graph + named tensors), like the released models."""
  with tf.Graph().as_default():
    image = tf.compat.v1.placeholder(tf.uint8, [None, None, 3], name="input_image")
    scales = tf.compat.v1.placeholder(tf.float32, [None], name="input_scales")
    abs_thres = tf.compat.v1.placeholder(tf.float32, [], name="input_abs_thres")
    max_num = tf.compat.v1.placeholder(tf.int32, [], name="input_max_feature_num")
    global_ind = tf.compat.v1.placeholder(tf.int32, [None], name="input_global_scales_ind")
    for name, tensor in toy_local_outputs(image, scales, max_num, abs_thres).items():
      tf.identity(tensor, name=name)
    tf.identity(toy_global_outputs(scales, global_ind), name="global_descriptors")
    with tf.compat.v1.Session() as sess:
      builder = tf.compat.v1.saved_model.Builder(path)
      builder.add_meta_graph_and_variables(sess, ["serve"])
      builder.save()
  return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("toy_models")
  return {
    "local": save_tf2(ToyLocal(), str(root / "local")),
    "local_and_global": save_tf2(ToyLocalAndGlobal(), str(root / "local_and_global")),
    "global": save_tf2(ToyGlobal(), str(root / "global")),
    "kaggle": save_tf2(ToyKaggle(), str(root / "kaggle")),
    "tf1": save_tf1_local_and_global(str(root / "tf1")),
  }


def make_config(model_path, *, local=True, global_=False, tf2=True, scales=(0.5, 1.0, 2.0), **kw):
  config = delf_config_pb2.DelfConfig(
    model_path=model_path,
    image_scales=list(scales),
    use_local_features=local,
    use_global_features=global_,
    is_tf2_exported=tf2,
  )
  config.delf_local_config.use_pca = False
  config.delf_local_config.max_feature_num = kw.pop("max_feature_num", 1000)
  config.delf_local_config.score_threshold = kw.pop("score_threshold", 100.0)
  config.delf_local_config.use_resized_coordinates = kw.pop("use_resized_coordinates", False)
  config.delf_global_config.use_pca = False
  config.delf_global_config.image_scales_ind.extend(kw.pop("image_scales_ind", []))
  for key, value in kw.items():
    setattr(config, key, value)
  return config


def l2(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def image(height, width):
  return np.random.default_rng(0).integers(0, 256, [height, width, 3], dtype=np.uint8)


def expected_global(rows):
  return l2(np.sum(l2(rows), axis=0))


def test_local_features_post_processing(models):
  extract = extractor_lib.MakeExtractor(make_config(models["local"], score_threshold=7.5))
  result = extract(image(40, 30))
  local = result["local_features"]
  assert set(local) == {"locations", "descriptors", "scales", "attention"}
  assert "global_descriptor" not in result
  # Box centres (y, x) of [0,0,40,30], [2,4,6,8], [-10,-10,10,10]; no resize.
  np.testing.assert_allclose(local["locations"], [[20, 15], [4, 6], [0, 0]])
  np.testing.assert_allclose(
    local["descriptors"], [[0.6, 0.8, 0, 0], [0, 0, -5 / 13, 12 / 13], [0.5] * 4], rtol=1e-6
  )
  np.testing.assert_allclose(local["scales"], [2.0, 0.5, 2.0])
  np.testing.assert_allclose(local["attention"], [10.5, 9.5, 8.5])
  assert local["attention"].shape == (3,)


def test_max_feature_num_is_fed(models):
  extract = extractor_lib.MakeExtractor(make_config(models["local"], max_feature_num=2))
  local = extract(image(20, 20))["local_features"]
  assert local["descriptors"].shape == (2, 4) and local["locations"].shape == (2, 2)


@pytest.mark.parametrize("use_resized_coordinates", [False, True])
def test_locations_mapped_back_through_resize_factors(models, use_resized_coordinates):
  config = make_config(
    models["local"], max_image_size=20, use_resized_coordinates=use_resized_coordinates
  )
  local = extractor_lib.MakeExtractor(config)(image(45, 30))["local_features"]
  # 45x30 with max 20: s = 20/45 -> 20 x round(13.33) = 13; factors [20/45, 13/30].
  centres = np.array([[10, 6.5], [4, 6], [0, 0]])
  factors = np.array([20 / 45, 13 / 30])
  expected = centres if use_resized_coordinates else centres / factors
  np.testing.assert_allclose(local["locations"], expected, rtol=1e-6)
  # Scales are 1 / pyramid scale, NOT corrected by the resize factors (KB-37).
  np.testing.assert_allclose(local["scales"], [2.0, 0.5, 2.0])


def _write_pca(directory, matrix, mean, variances):
  paths = {}
  for name, array in (("mean", mean), ("pca_proj_mat", matrix), ("var", variances)):
    paths[name] = os.path.join(directory, f"{name}.datum")
    datum_io.WriteToFile(np.asarray(array, np.float32), paths[name])
  return paths


def _set_pca(pca_message, paths, dim, whitening):
  pca_message.mean_path = paths["mean"]
  pca_message.projection_matrix_path = paths["pca_proj_mat"]
  pca_message.pca_dim = dim
  pca_message.use_whitening = whitening
  pca_message.pca_variances_path = paths["var"]


def test_local_pca_with_whitening(models, tmp_path):
  rng = np.random.default_rng(1)
  matrix = rng.standard_normal([4, 4])
  mean = rng.standard_normal([4])
  variances = rng.uniform(0.5, 2.0, [1, 4])  # Extra unit dimension: squeezed on load.
  paths = _write_pca(str(tmp_path), matrix, mean, variances)
  config = make_config(models["local"])
  config.delf_local_config.use_pca = True
  _set_pca(config.delf_local_config.pca_parameters, paths, 3, True)
  local = extractor_lib.MakeExtractor(config)(image(16, 16))["local_features"]
  projected = (l2(RAW_FEATURES) - mean) @ matrix[:3].T / np.sqrt(variances[0, :3])
  np.testing.assert_allclose(local["descriptors"], l2(projected), rtol=1e-5, atol=1e-6)


def test_local_and_global(models):
  config = make_config(
    models["local_and_global"], global_=True, scales=(0.25, 0.5, 1.0, 2.0), image_scales_ind=[1, 3]
  )
  result = extractor_lib.MakeExtractor(config)(image(24, 24))
  rows = GLOBAL_TABLE[[1, 3]] * np.array([[0.5], [2.0]])
  np.testing.assert_allclose(result["global_descriptor"], expected_global(rows), rtol=1e-6)
  assert result["global_descriptor"].dtype == np.float32
  assert result["local_features"]["descriptors"].shape == (3, 4)


def test_global_only_all_scales_and_pca(models, tmp_path):
  rng = np.random.default_rng(2)
  matrix, mean = rng.standard_normal([3, 3]), rng.standard_normal([3])
  paths = _write_pca(str(tmp_path), matrix, mean, np.ones([3]))
  config = make_config(models["global"], local=False, global_=True, scales=(0.5, 1.0, 2.0))
  config.delf_global_config.use_pca = True
  _set_pca(config.delf_global_config.pca_parameters, paths, 2, False)
  result = extractor_lib.MakeExtractor(config)(image(24, 24))
  assert set(result) == {"global_descriptor"}
  rows = GLOBAL_TABLE[:3] * np.array([[0.5], [1.0], [2.0]])  # empty image_scales_ind = all.
  per_scale = l2((l2(rows) - mean) @ matrix[:2].T)
  np.testing.assert_allclose(
    result["global_descriptor"], l2(per_scale.sum(axis=0)), rtol=1e-5, atol=1e-6
  )


def test_global_only_config_on_local_and_global_export(models):
  config = make_config(models["local_and_global"], local=False, global_=True, scales=(1.0, 2.0))
  result = extractor_lib.MakeExtractor(config)(image(24, 24))
  np.testing.assert_allclose(
    result["global_descriptor"], expected_global(GLOBAL_TABLE[:2] * [[1.0], [2.0]]), rtol=1e-6
  )


def test_tiny_image_returns_early_with_a_warning(models):
  config = make_config(models["local"], global_=False)
  extract = extractor_lib.MakeExtractor(config)
  with pytest.warns(UserWarning, match=r"small\.jpg is 9x40 px"):
    result = extract(image(9, 40), image_name="small.jpg")
  assert set(result) == {"global_descriptor", "local_features"}
  assert result["global_descriptor"].size == 0
  assert all(v.size == 0 for v in result["local_features"].values())
  # A large image resized below 10 px by max_image_size triggers it too.
  tiny = extractor_lib.MakeExtractor(make_config(models["local"], max_image_size=8))
  with pytest.warns(UserWarning, match="8x4 px"):
    assert tiny(image(40, 20))["local_features"]["locations"].size == 0


def test_tf2_export_without_flag_warns_and_works(models):
  config = make_config(models["local"], tf2=False, score_threshold=1.0)
  with pytest.warns(UserWarning, match="is_tf2_exported: true"):
    extract = extractor_lib.MakeExtractor(config)
  np.testing.assert_allclose(extract(image(20, 20))["local_features"]["attention"], [4, 3, 2])
  assert extract.max_attention(image(20, 20)) == 3.0


def test_tf1_export_is_pruned_and_called_positionally(models):
  config = make_config(
    models["tf1"], tf2=False, global_=True, score_threshold=2.0, image_scales_ind=[0, 2]
  )
  with warnings.catch_warnings():
    warnings.simplefilter("error", UserWarning)  # No "set is_tf2_exported" warning here.
    extract = extractor_lib.MakeExtractor(config)
    result = extract(image(30, 20))
  assert extract.max_attention(image(30, 20)) == 3.0  # Probed with threshold 0.
  local = result["local_features"]
  np.testing.assert_allclose(local["locations"], [[15, 10], [4, 6], [0, 0]])
  np.testing.assert_allclose(local["attention"], [5, 4, 3])
  rows = GLOBAL_TABLE[[0, 2]] * np.array([[0.5], [2.0]])
  np.testing.assert_allclose(result["global_descriptor"], expected_global(rows), rtol=1e-6)


def test_kaggle_export_gets_a_clear_error(models):
  config = make_config(models["kaggle"], local=False, global_=True)
  with pytest.raises(extractor_lib.ExportFormatError, match=r"Kaggle-format export.*not usable"):
    extractor_lib.MakeExtractor(config)


def test_config_errors(models, tmp_path):
  with pytest.raises(ValueError, match="at least one of use_local_features"):
    extractor_lib.MakeExtractor(make_config(models["local"], local=False, global_=False))
  with pytest.raises(FileNotFoundError, match="not a SavedModel directory"):
    extractor_lib.MakeExtractor(make_config(str(tmp_path / "nope")))
  with pytest.raises(ValueError, match="exports no global descriptors"):
    extractor_lib.MakeExtractor(make_config(models["local"], global_=True))
  with pytest.raises(ValueError, match="image_scales_ind"):
    extractor_lib.MakeExtractor(
      make_config(models["local_and_global"], global_=True, image_scales_ind=[5])
    )
  with pytest.raises(ValueError, match="resize_factor"):
    extractor_lib.MakeExtractor(make_config(models["local"]))(image(20, 20), 0.0)
  config = make_config(models["local"])
  config.delf_local_config.use_pca = True
  config.delf_local_config.pca_parameters.mean_path = str(tmp_path / "missing_mean.datum")
  config.delf_local_config.pca_parameters.projection_matrix_path = "x"
  config.delf_local_config.pca_parameters.pca_dim = 2
  with pytest.raises(FileNotFoundError, match=r"use_pca is true.*missing_mean\.datum"):
    extractor_lib.MakeExtractor(config)
  config = make_config(models["local"])
  config.delf_local_config.ClearField("use_pca")  # Defaults to true, no PCA files given.
  with pytest.raises(ValueError, match=r"delf_local_config\.use_pca is true \(its default"):
    extractor_lib.MakeExtractor(config)
