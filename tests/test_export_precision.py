"""Reduced-precision exports (folded batch norms) and the batch signature (issue 12).

Oracles: the Keras model itself (folding is exact up to float32 rounding), and the
one-image signature (the batch signature must give every image what it gives).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from delf.export import exporter, modules
from delf.export.folded import FoldedInferenceModel
from delf.export.precision import bf16_support, cpu_bf16_flags, validate_precision
from tests.model_fixtures import make_tiny_model, write_tiny_logdir


def _randomise_batch_norms(model, seed: int = 0) -> None:
  """Non-trivial moving statistics, so that folding is really tested."""
  rng = np.random.default_rng(seed)
  for variable in model.variables:
    shape = tuple(variable.shape)
    if "moving_variance" in variable.path:
      variable.assign((np.abs(rng.normal(size=shape)) + 0.5).astype(np.float32))
    elif "moving_mean" in variable.path or "beta" in variable.path:
      variable.assign((0.3 * rng.normal(size=shape)).astype(np.float32))
    elif "gamma" in variable.path:
      variable.assign((1 + 0.3 * rng.normal(size=shape)).astype(np.float32))


@pytest.fixture(scope="module")
def delg_model():
  tf.keras.utils.set_random_seed(3)
  model = make_tiny_model("Delg", use_dim_reduction=True)
  _randomise_batch_norms(model)
  return model


@pytest.fixture(scope="module")
def delf_model():
  tf.keras.utils.set_random_seed(4)
  model = make_tiny_model("Delf")
  _randomise_batch_norms(model, seed=1)
  return model


def _images(count: int, height: int = 72, width: int = 96, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(
    0, 256, size=(count, height, width, 3), dtype=np.uint8
  )


def _cosine(a, b) -> float:
  a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
  return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_cpu_bf16_detection(tmp_path):
  with_bf16 = tmp_path / "zen4"
  with_bf16.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
  without = tmp_path / "zen2"
  without.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n")
  assert cpu_bf16_flags(str(with_bf16)) == ["avx512_bf16"]
  assert cpu_bf16_flags(str(without)) == []
  assert cpu_bf16_flags(str(tmp_path / "absent")) == []
  if not tf.config.list_physical_devices("GPU"):
    assert bf16_support(str(with_bf16)) == (
      True,
      "the CPU has native bfloat16 instructions (avx512_bf16)",
    )
    native, reason = bf16_support(str(without))
    assert not native and "emulated and slower than float32" in reason
  with pytest.raises(ValueError, match="float32, bfloat16, float16"):
    validate_precision("int8")


@pytest.mark.parametrize("model_name", ["delf_model", "delg_model"])
def test_folded_float32_equals_the_keras_model(model_name, request):
  model = request.getfixturevalue(model_name)
  images = tf.constant(np.random.default_rng(1).uniform(-1, 1, (2, 80, 112, 3)), tf.float32)
  expected = model.build_call(images)
  folded = FoldedInferenceModel(model, "float32")
  got = folded.build_call(images)
  for key in ("global_descriptor", "attention_prob", "local_features"):
    np.testing.assert_allclose(
      got[key], expected[key], rtol=1e-4, atol=1e-5 * np.abs(expected[key]).max()
    )
  np.testing.assert_array_equal(folded.global_call(images), got["global_descriptor"])
  assert folded.descriptor_dim == model.descriptor_dim
  assert folded.local_descriptor_dim == model.local_descriptor_dim


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_outputs_are_float32_and_close(delg_model, precision):
  images = tf.constant(np.random.default_rng(2).uniform(-1, 1, (1, 80, 112, 3)), tf.float32)
  expected = delg_model.build_call(images)
  got = FoldedInferenceModel(delg_model, precision).build_call(images)
  for key in ("global_descriptor", "attention_prob", "local_features"):
    assert got[key].dtype == tf.float32
    assert got[key].shape == expected[key].shape
    assert _cosine(got[key], expected[key]) > 0.999, key
  # Not the float32 values: the reduced type really is used.
  assert not np.array_equal(got["local_features"], expected["local_features"])


def _one_at_a_time(module, images, scales, max_num, threshold, global_ind=None):
  results = []
  for image in images:
    args = [tf.constant(image), scales, max_num, threshold]
    if global_ind is not None:
      args.append(global_ind)
    results.append({k: v.numpy() for k, v in module.ExtractFeatures(*args).items()})
  return results


@pytest.mark.parametrize("with_global", [False, True])
def test_batch_signature_gives_each_image_its_one_image_result(delg_model, with_global):
  images = _images(3)
  scales = tf.constant([0.5, 1.0, 1.4142], tf.float32)
  max_num, threshold = tf.constant(40, tf.int32), tf.constant(0.0, tf.float32)
  if with_global:
    module = modules.LocalAndGlobalFeatureModule(delg_model, block3_strides=True, iou=1.0)
    global_ind = tf.constant([0, 2], tf.int32)
    batch = module.ExtractFeaturesBatch(tf.constant(images), scales, max_num, threshold, global_ind)
  else:
    module = modules.LocalFeatureModule(delg_model, block3_strides=True, iou=0.8)
    global_ind = None
    batch = module.ExtractFeaturesBatch(tf.constant(images), scales, max_num, threshold)
  singles = _one_at_a_time(module, images, scales, max_num, threshold, global_ind)
  counts = batch["num_features"].numpy()
  np.testing.assert_array_equal(counts, [len(s["scores"]) for s in singles])
  assert counts.min() > 0
  bounds = np.concatenate([[0], np.cumsum(counts)])
  for i, single in enumerate(singles):
    rows = slice(bounds[i], bounds[i + 1])
    for key in ("boxes", "features", "scales", "scores"):
      np.testing.assert_allclose(batch[key].numpy()[rows], single[key], rtol=1e-5, atol=1e-5)
    if with_global:
      np.testing.assert_allclose(
        batch["global_descriptors"].numpy()[i], single["global_descriptors"], rtol=1e-5, atol=1e-6
      )


def test_bf16_export_with_batch_signature_through_the_extractor(tmp_path, delg_model):
  from delf.extraction.extractor import MakeExtractor
  from delf.protos import delf_config_pb2

  tf.keras.utils.set_random_seed(5)
  logdir = tmp_path / "logdir"
  write_tiny_logdir(logdir, "Delg", num_classes=5, use_dim_reduction=True)
  export_path = str(tmp_path / "export")
  config = exporter.LocalAndGlobalExportConfig(
    export_path=export_path,
    ckpt_path=str(logdir / "delf_weights"),
    delg_embedding_layer_dim=32,
    autoencoder_dimensions=16,
    local_feature_map_channels=64,
    precision="bfloat16",
    batch_signature=True,
  )
  exporter.export(config)
  delf_config = delf_config_pb2.DelfConfig(
    model_path=export_path,
    image_scales=[0.7071, 1.0],
    use_local_features=True,
    use_global_features=True,
    is_tf2_exported=True,
  )
  delf_config.delf_local_config.use_pca = False
  delf_config.delf_local_config.max_feature_num = 50
  delf_config.delf_local_config.score_threshold = 0.0
  delf_config.delf_global_config.use_pca = False
  extractor = MakeExtractor(delf_config)
  assert extractor.supports_batches
  prepared = [extractor.prepare(image) for image in _images(3, 90, 120, seed=7)]
  batch = extractor.extract_resized_batch([p[0] for p in prepared], [p[1] for p in prepared])
  for (resized, factors), got in zip(prepared, batch):
    single = extractor.extract_resized(resized, factors)
    np.testing.assert_allclose(got["global_descriptor"], single["global_descriptor"], atol=1e-5)
    for key in ("locations", "descriptors", "scales", "attention"):
      np.testing.assert_allclose(
        got["local_features"][key], single["local_features"][key], atol=1e-5
      )
  with pytest.raises(ValueError, match="one size"):
    extractor.extract_resized_batch([prepared[0][0], prepared[0][0][:-8]], [prepared[0][1]] * 2)


def test_extract_features_batch_size_matches_one_at_a_time(tmp_path, capsys):
  from PIL import Image

  from delf import feature_io
  from delf.extraction import extract_features as extract_lib

  tf.keras.utils.set_random_seed(6)
  logdir = tmp_path / "logdir"
  write_tiny_logdir(logdir, "Delf", num_classes=5, use_dim_reduction=False)
  plain, batched = str(tmp_path / "plain"), str(tmp_path / "batched")
  for path, batch_signature in ((plain, False), (batched, True)):
    exporter.export(
      exporter.LocalExportConfig(
        export_path=path,
        ckpt_path=str(logdir / "delf_weights"),
        use_autoencoder=False,
        local_feature_map_channels=64,
        batch_signature=batch_signature,
      )
    )
  paths = []
  sizes = [(128, 160)] * 3 + [(136, 160)] + [(128, 160)] * 2  # a size change inside the list
  for i, (height, width) in enumerate(sizes):
    path = tmp_path / f"image_{i}.jpg"
    Image.fromarray(_images(1, height, width, seed=10 + i)[0]).save(path)
    paths.append(str(path))
  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"not a jpeg")
  paths.insert(2, str(broken))
  (tmp_path / "list.txt").write_text("\n".join(paths) + "\n")

  def run(model_path: str, output_dir: str, batch_size: int) -> int:
    config_path = tmp_path / f"config_{batch_size}.pbtxt"
    config_path.write_text(
      f'model_path: "{model_path}"\nimage_scales: [0.7071, 1.0]\nis_tf2_exported: true\n'
      "delf_local_config { use_pca: false max_feature_num: 30 score_threshold: 0.0 }\n"
    )
    return extract_lib.extract_features(
      extract_lib.ExtractFeaturesConfig(
        config_path=str(config_path),
        list_images_path=str(tmp_path / "list.txt"),
        output_dir=output_dir,
        batch_size=batch_size,
      )
    )

  assert run(plain, str(tmp_path / "refused"), 3) == 1
  assert "re-export" in capsys.readouterr().err
  assert run(batched, str(tmp_path / "one"), 1) == 1  # the broken image
  assert run(batched, str(tmp_path / "three"), 3) == 1
  assert "broken.jpg" in capsys.readouterr().err
  written = sorted(n for n in os.listdir(tmp_path / "three") if n.endswith(".delf"))
  assert written == sorted(n for n in os.listdir(tmp_path / "one") if n.endswith(".delf"))
  assert len(written) == len(sizes)
  for name in written:
    one = feature_io.ReadFromFile(str(tmp_path / "one" / name))
    three = feature_io.ReadFromFile(str(tmp_path / "three" / name))
    assert len(one[0]) == 30
    for a, b in zip(one, three):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bf16_on_real_photos_keeps_descriptors(real_photos_dir, delg_model):
  """Global (DELG) descriptors and local feature maps of real photos: cosine >= 0.999."""
  from PIL import Image

  folded = FoldedInferenceModel(delg_model, "bfloat16")
  for name in ("opencv/graf1.png", "vlfeat/roofs1.jpg", "wikimedia_gbc"):
    path = real_photos_dir / name
    if path.is_dir():
      path = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".png"))[0]
    image = Image.open(path).convert("RGB")
    image.thumbnail((320, 320))
    pixels = (np.asarray(image, np.float32)[np.newaxis] - 128.0) / 128.0
    expected = delg_model.build_call(tf.constant(pixels))
    got = folded.build_call(tf.constant(pixels))
    assert _cosine(got["global_descriptor"], expected["global_descriptor"]) >= 0.999, path
    local_got = got["local_features"].numpy().reshape(-1, delg_model.local_descriptor_dim)
    local_expected = expected["local_features"].numpy().reshape(local_got.shape)
    per_cell = np.sum(local_got * local_expected, 1) / (
      np.linalg.norm(local_got, axis=1) * np.linalg.norm(local_expected, axis=1) + 1e-12
    )
    assert np.median(per_cell) >= 0.999 and per_cell.min() >= 0.99, path
    np.testing.assert_allclose(
      got["attention_prob"], expected["attention_prob"], rtol=0.05, atol=0.02
    )
