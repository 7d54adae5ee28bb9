"""End-to-end exports of tiny DELF/DELG checkpoints (training.md §7, KB-29..35).

Checkpoints are written exactly as training writes them
(``tf.train.Checkpoint(model=model).write(<logdir>/delf_weights)`` plus
``model_config.json``); the SavedModels are written by the scripts, loaded
with ``tf.saved_model.load`` and called through ``serving_default`` with the
reference keyword names. Expected values come from the in-memory Keras model
and hand-computed receptive boxes.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import socket

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from delf.export import exporter
from delf.model.delf_model import Delf, Delg
from tests import cli_harness

TINY = {"block_counts": (1, 1, 1, 1), "width_factor": 1 / 16}
BLOCK3_CHANNELS = 64  # 1024 * width_factor
DELF_GLOBAL_DIM = 128  # 2048 * width_factor
AE_DIM = 16
EMBEDDING_DIM = 32
KAGGLE_SCALES = (0.70710677, 1.0, 1.4142135)


@functools.cache
def load_export(export_path: str):
  """Each SavedModel is loaded once per test session (loading takes about a second)."""
  return tf.saved_model.load(export_path)


def _unregister_script_flags() -> None:
  # cli_harness._unregister_script_flags deletes from the list it iterates, which
  # skips every other flag; unregister them all first.
  for module_name, module_flags in list(flags.FLAGS.flags_by_module_dict().items()):
    if module_name.startswith("scripts."):
      for flag in list(module_flags):
        if flag.name in flags.FLAGS:
          delattr(flags.FLAGS, flag.name)


def run_export(script: str, *args: str) -> None:
  _unregister_script_flags()
  cli_harness.run_script(script, list(args))


def write_training_logdir(logdir, model) -> str:
  os.makedirs(logdir, exist_ok=True)
  prefix = tf.train.Checkpoint(model=model).write(os.path.join(logdir, "delf_weights"))
  config = {"model_class": type(model).model_class_name, "config": model.get_config()}
  with open(os.path.join(logdir, "model_config.json"), "w") as f:
    json.dump({**config, "format_version": 1}, f)
  return prefix


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def delf_ckpt(workdir):
  """A DELF training run without the autoencoder (classifier heads included)."""
  tf.keras.utils.set_random_seed(1)
  model = Delf(num_classes=5, **TINY)
  return write_training_logdir(workdir / "delf_logdir", model), model


@pytest.fixture(scope="module")
def delg_ckpt(workdir):
  """A DELG training run with the autoencoder (classifier heads included)."""
  tf.keras.utils.set_random_seed(2)
  model = Delg(
    num_classes=5,
    use_dim_reduction=True,
    reduced_dimension=AE_DIM,
    dim_expand_channels=BLOCK3_CHANNELS,
    embedding_layer_dim=EMBEDDING_DIM,
    **TINY,
  )
  return write_training_logdir(workdir / "delg_logdir", model), model


@pytest.fixture(scope="module")
def local_noae_export(workdir, delf_ckpt):
  path = str(workdir / "delf_local_noae")
  run_export(
    "export_local_model",
    f"--ckpt_path={delf_ckpt[0]}",
    f"--export_path={path}",
    "--nouse_autoencoder",
  )
  return path


@pytest.fixture(scope="module")
def local_ae_export(workdir, delg_ckpt):
  path = str(workdir / "delf_local")
  run_export(
    "export_local_model",
    f"--ckpt_path={delg_ckpt[0]}",
    f"--export_path={path}",
    f"--autoencoder_dimensions={AE_DIM}.0",
    f"--local_feature_map_channels={BLOCK3_CHANNELS}",
  )
  return path


@pytest.fixture(scope="module")
def global_export(workdir, delf_ckpt):
  path = str(workdir / "delf_global")
  run_export("export_global_model", f"--ckpt_path={delf_ckpt[0]}", f"--export_path={path}")
  return path


@pytest.fixture(scope="module")
def kaggle_export(workdir, delg_ckpt):
  path = str(workdir / "kaggle")
  run_export(
    "export_global_model",
    f"--ckpt_path={delg_ckpt[0]}",
    f"--export_path={path}",
    "--delg_global_features",
    f"--delg_embedding_layer_dim={EMBEDDING_DIM}",
    "--input_scales_list=" + ",".join(str(s) for s in KAGGLE_SCALES),
    "--multi_scale_pool_type=sum",
    "--normalize_global_descriptor",
  )
  return path


@pytest.fixture(scope="module")
def local_and_global_export(workdir, delg_ckpt):
  path = str(workdir / "delg_local_and_global")
  run_export(
    "export_local_and_global_model",
    f"--ckpt_path={delg_ckpt[0]}",
    f"--export_path={path}",
    f"--delg_embedding_layer_dim={EMBEDDING_DIM}",
    f"--autoencoder_dimensions={AE_DIM}",
    f"--local_feature_map_channels={BLOCK3_CHANNELS}",
  )
  return path


def _image(height=96, width=128, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _pyramid_level(image, scale):
  """The export's pyramid level, computed independently: normalise, round half-even, resize."""
  size = np.round(np.array(image.shape[:2], np.float32) * np.float32(scale)).astype(np.int32)
  normalised = (image.astype(np.float32)[None] - 128.0) / 128.0
  return tf.image.resize(normalised, size, method="bilinear")


def _expected_local(model, image, scales, max_feature_num, abs_thres, stride):
  """Candidates from the Keras model with hand-computed receptive boxes, best first."""
  candidates = []
  for scale in scales:
    outputs = model.build_call(_pyramid_level(image, scale), training=False)
    prob = outputs["attention_prob"].numpy()[0, ..., 0]
    feats = outputs["local_features"].numpy()[0]
    for y in range(prob.shape[0]):
      for x in range(prob.shape[1]):
        if prob[y, x] >= abs_thres:
          box = np.array([stride * y - 145, stride * x - 145, stride * y + 145, stride * x + 145])
          candidates.append((prob[y, x], box / scale, feats[y, x], 1.0 / scale))
  candidates.sort(key=lambda c: -c[0])
  top = candidates[:max_feature_num]
  return (
    np.array([c[1] for c in top]),
    np.array([c[2] for c in top]),
    np.array([c[3] for c in top]),
    np.array([[c[0]] for c in top]),
    len(candidates),
  )


def _check_local(outputs, expected, depth):
  boxes, features, scales, scores, _ = expected
  assert outputs["boxes"].dtype == tf.float32 and outputs["features"].dtype == tf.float32
  assert outputs["features"].shape == (len(boxes), depth)
  np.testing.assert_allclose(outputs["scores"], scores, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(outputs["boxes"], boxes, rtol=1e-6)
  np.testing.assert_allclose(outputs["scales"], scales, rtol=1e-6)
  np.testing.assert_allclose(outputs["features"], features, rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------ reference signatures


def parse_saved_model_cli(text: str) -> dict:
  """``{'inputs'|'outputs': {key: (dtype, shape)}}`` of ``serving_default`` in a listing."""
  section = text.split("signature_def['serving_default']:", 1)[1].split("Method name is", 1)[0]
  result = {"inputs": {}, "outputs": {}}
  pattern = re.compile(
    r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([^)]*)\)"
  )
  for direction, key, dtype, shape in pattern.findall(section):
    dims = tuple(int(d) for d in shape.replace(" ", "").split(",") if d)
    result[direction][key] = (dtype, dims)
  return result


_DTYPES = {tf.float32: "DT_FLOAT", tf.int32: "DT_INT32", tf.uint8: "DT_UINT8"}


def our_signature(export_path: str) -> dict:
  signature = load_export(export_path).signatures["serving_default"]
  inputs, outputs = exporter.signature_specs(signature)
  as_listing = lambda specs: {  # noqa: E731
    key: (_DTYPES[spec.dtype], tuple(-1 if d is None else d for d in spec.shape.as_list()))
    for key, spec in specs.items()
  }
  return {"inputs": as_listing(inputs), "outputs": as_listing(outputs)}


@pytest.mark.parametrize(
  ("export_fixture", "listing", "feature_dim"),
  [
    ("local_noae_export", "saved_model_cli_delf_local_noae.txt", BLOCK3_CHANNELS),
    ("local_ae_export", "saved_model_cli_delf_local.txt", AE_DIM),
    ("global_export", "saved_model_cli_delf_global.txt", None),
    ("local_and_global_export", "saved_model_cli_delg_local_and_global.txt", AE_DIM),
  ],
)
def test_signature_matches_reference_listing(
  request, interop_dir, export_fixture, listing, feature_dim
):
  text = (interop_dir / listing).read_text()
  reference = parse_saved_model_cli(text)
  assert reference["inputs"] and reference["outputs"]
  export_path = request.getfixturevalue(export_fixture)
  ours = our_signature(export_path)
  # The module's functions: ExtractFeatures everywhere. The reference's non-fixed global
  # export also lists an ExtractFeaturesFixedScales that has no scales to run; ours
  # has it only with --input_scales_list (see test_kaggle_global_export).
  functions = set(re.findall(r"Function Name: '(\w+)'", text)) - {"ExtractFeaturesFixedScales"}
  assert functions == {"ExtractFeatures"}
  loaded = load_export(export_path)
  assert all(hasattr(loaded, name) for name in functions)
  for direction in ("inputs", "outputs"):
    assert set(ours[direction]) == set(reference[direction]), direction
    for key, (dtype, shape) in reference[direction].items():
      our_dtype, our_shape = ours[direction][key]
      assert our_dtype == dtype, key
      if key == "features":
        # The reference hard-coded 1024 (KB-29); ours is the model's local descriptor size.
        assert our_shape == (-1, feature_dim)
      else:
        assert our_shape == shape, key


# ------------------------------------------------------------------ values


def test_local_export_without_autoencoder(local_noae_export, delf_ckpt):
  _, model = delf_ckpt
  serve = load_export(local_noae_export).signatures["serving_default"]
  image = _image()
  scales = [0.5, 1.0]
  outputs = serve(
    input_image=tf.constant(image),
    input_scales=tf.constant(scales),
    input_max_feature_num=tf.constant(20),
    input_abs_thres=tf.constant(0.0),
  )
  # block3_strides (default) puts block3 at stride 32.
  expected = _expected_local(model, image, scales, 20, 0.0, stride=32)
  assert expected[4] == 3 * 4 + 2 * 2  # 96x128: 3x4 cells at scale 1.0, 2x2 at 0.5
  _check_local(outputs, expected, BLOCK3_CHANNELS)
  assert set(np.unique(outputs["scales"])) <= {1.0, 2.0}


def test_local_export_box_centres_hit_the_cells(local_noae_export):
  serve = load_export(local_noae_export).signatures["serving_default"]
  outputs = serve(
    input_image=tf.constant(_image(64, 96)),
    input_scales=tf.constant([1.0, 2.0]),
    input_max_feature_num=tf.constant(1000),
    input_abs_thres=tf.constant(-1.0),
  )
  boxes, scales = outputs["boxes"].numpy(), outputs["scales"].numpy()
  centres = (boxes[:, :2] + boxes[:, 2:]) / 2
  # Centre = 32 * (row, col) / s in input pixels: a grid of step 32 (s=1) or 16 (s=2).
  for scale, step, shape in ((1.0, 32, (2, 3)), (0.5, 16, (4, 6))):
    rows = centres[scales == scale]
    assert len(rows) == shape[0] * shape[1]
    expected = {(step * y, step * x) for y in range(shape[0]) for x in range(shape[1])}
    assert {tuple(r) for r in rows.tolist()} == expected
  np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], 290 * scales)


def test_local_export_with_autoencoder_kb29(local_ae_export, delg_ckpt):
  _, model = delg_ckpt
  serve = load_export(local_ae_export).signatures["serving_default"]
  image = _image(80, 72, seed=4)
  scores_all = _expected_local(model, image, [1.0], 1000, -1.0, stride=32)[3][:, 0]
  threshold = float(np.median(scores_all))
  outputs = serve(
    input_image=tf.constant(image),
    input_scales=tf.constant([1.0, 0.75]),
    input_max_feature_num=tf.constant(5),
    input_abs_thres=tf.constant(threshold),
  )
  expected = _expected_local(model, image, [1.0, 0.75], 5, threshold, stride=32)
  _check_local(outputs, expected, AE_DIM)
  assert np.all(outputs["scores"] >= threshold)


def test_global_export_per_scale_rows(global_export, delf_ckpt):
  _, model = delf_ckpt
  serve = load_export(global_export).signatures["serving_default"]
  image = _image(70, 90, seed=5)
  scales = [0.5, 1.0, 1.5]
  outputs = serve(
    input_image=tf.constant(image),
    input_scales=tf.constant(scales),
    input_global_scales_ind=tf.constant([2, 0]),
  )
  assert list(outputs) == ["global_descriptors"]
  expected = [model.global_call(_pyramid_level(image, scales[i])).numpy()[0] for i in (0, 2)]
  np.testing.assert_allclose(outputs["global_descriptors"], expected, rtol=1e-4, atol=1e-5)
  empty = serve(
    input_image=tf.constant(image),
    input_scales=tf.constant(scales),
    input_global_scales_ind=tf.zeros([0], tf.int32),
  )["global_descriptors"]
  assert empty.shape == (0, DELF_GLOBAL_DIM)  # KB-32


def test_kaggle_global_export(kaggle_export, delg_ckpt):
  _, model = delg_ckpt
  loaded = load_export(kaggle_export)
  serve = loaded.signatures["serving_default"]
  inputs, outputs = exporter.signature_specs(serve)
  assert set(inputs) == {"input_image"}
  assert inputs["input_image"].shape.as_list() == [None, None, 3]
  assert inputs["input_image"].dtype == tf.uint8
  assert {k: v.shape.as_list() for k, v in outputs.items()} == {
    "global_descriptor": [EMBEDDING_DIM]
  }
  image = _image(60, 50, seed=6)
  got = serve(input_image=tf.constant(image))["global_descriptor"].numpy()
  rows = [model.global_call(_pyramid_level(image, s)).numpy()[0] for s in KAGGLE_SCALES]
  expected = np.sum(rows, axis=0)
  np.testing.assert_allclose(got, expected / np.linalg.norm(expected), rtol=1e-4, atol=1e-6)
  assert hasattr(loaded, "ExtractFeaturesFixedScales")


def test_local_and_global_export(local_and_global_export, delg_ckpt):
  _, model = delg_ckpt
  serve = load_export(local_and_global_export).signatures["serving_default"]
  image = _image(64, 80, seed=7)
  scales = [0.75, 1.0]
  outputs = serve(
    input_image=tf.constant(image),
    input_scales=tf.constant(scales),
    input_max_feature_num=tf.constant(8),
    input_abs_thres=tf.constant(0.0),
    input_global_scales_ind=tf.constant([1]),
  )
  _check_local(outputs, _expected_local(model, image, scales, 8, 0.0, stride=32), AE_DIM)
  expected_global = model.global_call(_pyramid_level(image, 1.0)).numpy()
  np.testing.assert_allclose(outputs["global_descriptors"], expected_global, rtol=1e-4, atol=1e-5)


def test_export_config_json(local_and_global_export, global_export):
  with open(os.path.join(local_and_global_export, exporter.EXPORT_CONFIG_FILENAME)) as f:
    config = json.load(f)
  assert config["format_version"] == 1 and config["export"] == "local_and_global"
  assert config["flags"]["autoencoder_dimensions"] == AE_DIM
  assert config["model_class"] == "Delg" and config["model_config"]["num_classes"] is None
  assert config["local"] == {
    "descriptor_dim": AE_DIM,
    "receptive_field": 291,
    "stride": 32,
    "padding": 145,
    "iou": 1.0,
    "descriptors": "raw (not L2-normalised)",
  }
  assert config["global"] == {"descriptor_dim": EMBEDDING_DIM}
  assert config["signature"]["inputs"]["input_image"] == {
    "dtype": "uint8",
    "shape": [None, None, 3],
  }
  assert config["signature"]["outputs"]["features"]["shape"] == [None, AE_DIM]
  with open(os.path.join(global_export, exporter.EXPORT_CONFIG_FILENAME)) as f:
    config = json.load(f)
  assert "local" not in config and config["model_config"]["block3_strides"] is False  # KB-35


def test_export_directory_has_the_usual_permissions(global_export):
  # The export is staged in a private temporary folder; once renamed it must be
  # readable as a folder made by os.makedirs would be.
  from delf.atomic_io import current_umask

  assert os.stat(global_export).st_mode & 0o777 == 0o777 & ~current_umask()


# ------------------------------------------------------------------ refusals


def test_flag_mismatch_is_refused_naming_the_flags(workdir, delg_ckpt):
  path = str(workdir / "refused")
  with pytest.raises(SystemExit) as raised:
    run_export(
      "export_local_and_global_model",
      f"--ckpt_path={delg_ckpt[0]}",
      f"--export_path={path}",
      "--nouse_autoencoder",
      f"--delg_embedding_layer_dim={EMBEDDING_DIM}",
    )
  message = str(raised.value.code)
  assert "\n" not in message
  assert "--nouse_autoencoder (training used --use_autoencoder)" in message
  assert "model/autoencoder" in message  # the checkpoint part the export would drop
  assert not os.path.exists(path)
  with pytest.raises(SystemExit) as raised:
    run_export(
      "export_global_model",
      f"--ckpt_path={delg_ckpt[0]}",
      f"--export_path={path}",
    )
  # KB-34: a DELG checkpoint exported without --delg_global_features.
  assert "--nodelg_global_features (training used --delg_global_features)" in str(raised.value.code)
  assert not os.path.exists(path)


def test_missing_variables_without_model_config(delf_ckpt):
  """KB-31 without model_config.json: lists the missing variables and the likely flags."""
  prefix, _ = delf_ckpt
  model = Delg(embedding_layer_dim=EMBEDDING_DIM, num_classes=None, block3_strides=False, **TINY)
  config = exporter.GlobalExportConfig(
    export_path="unused", ckpt_path=prefix, delg_global_features=True
  )
  with pytest.raises(exporter.CheckpointMismatchError) as raised:
    exporter.load_and_verify(model, prefix, config, None, global_only=True)
  message = str(raised.value)
  assert "2 model variables not in the checkpoint" in message
  assert "embedding" in message and "--delg_global_features" in message
  assert "--use_autoencoder" not in message


def test_existing_export_path_refused(workdir, delf_ckpt, local_noae_export):
  before = sorted(os.listdir(local_noae_export))
  with pytest.raises(SystemExit, match="already exists"):
    run_export(
      "export_local_model",
      f"--ckpt_path={delf_ckpt[0]}",
      f"--export_path={local_noae_export}",
      "--nouse_autoencoder",
    )
  assert sorted(os.listdir(local_noae_export)) == before
  with pytest.raises(ValueError, match="already exists"):
    exporter.export(
      exporter.LocalExportConfig(export_path=local_noae_export, ckpt_path=delf_ckpt[0])
    )


@pytest.mark.parametrize(
  "script", ["export_local_model", "export_global_model", "export_local_and_global_model"]
)
def test_missing_checkpoint_and_default_path(workdir, script):
  _unregister_script_flags()
  cli_harness.load_script(script)
  assert flags.FLAGS["ckpt_path"].default == "/tmp/delf/delf_weights"  # KB-30
  missing = str(workdir / "no_logdir" / "delf_weights")
  with pytest.raises(SystemExit) as raised:
    run_export(script, f"--ckpt_path={missing}", f"--export_path={workdir / 'never'}")
  message = str(raised.value.code)
  assert missing in message and "training writes <logdir>/delf_weights" in message
  assert "\n" not in message


def test_checkpoint_directory_hint(delf_ckpt):
  logdir = os.path.dirname(delf_ckpt[0])
  with pytest.raises(FileNotFoundError, match=r"did you mean --ckpt_path=.*delf_weights\?"):
    exporter.check_checkpoint(logdir)


def test_behaviour_mismatches_are_named():
  training = {"model_class": "Delg", "config": {"block3_strides": True, "gem_power": 3.0}}
  config = exporter.LocalAndGlobalExportConfig(
    export_path="x", block3_strides=False, delg_gem_power=4.0
  )
  assert exporter.behaviour_mismatches(config, training) == [
    "--noblock3_strides (training used --block3_strides)",
    "--delg_gem_power=4 (training used --delg_gem_power=3)",
  ]
  same = exporter.LocalAndGlobalExportConfig(export_path="x")
  assert exporter.behaviour_mismatches(same, training) == []
  # The global export always uses block3_strides=False (KB-35): nothing to warn about.
  global_config = exporter.GlobalExportConfig(export_path="x", delg_global_features=True)
  assert exporter.behaviour_mismatches(global_config, training) == []


@pytest.mark.parametrize(
  ("script", "args", "error"),
  [
    ("export_local_model", ["--iou=1.5"], "iou must be in"),
    ("export_local_and_global_model", ["--iou=-0.1"], "iou must be in"),
    ("export_global_model", ["--input_scales_list="], "at least one scale"),
  ],
)
def test_bad_flag_values_fail_before_loading(workdir, script, args, error):
  # The checkpoint does not exist: the flag check must come first.
  with pytest.raises(SystemExit, match=error):
    run_export(script, f"--export_path={workdir / 'never'}", "--ckpt_path=/nonexistent", *args)


def test_export_path_is_required():
  from absl import app

  with pytest.raises(app.UsageError, match="export_path"):
    run_export("export_local_model")


def test_local_module_without_block3_strides_uses_stride_16():
  from delf.export.modules import LocalFeatureModule

  tf.keras.utils.set_random_seed(3)
  model = Delf(block3_strides=False, num_classes=None, **TINY)
  module = LocalFeatureModule(model, block3_strides=False, iou=1.0)
  image = _image(64, 48, seed=8)
  outputs = module.ExtractFeatures(
    tf.constant(image), tf.constant([1.0, 0.5]), tf.constant(1000), tf.constant(-1.0)
  )
  expected = _expected_local(model, image, [1.0, 0.5], 1000, -1.0, stride=16)
  assert expected[4] == 4 * 3 + 2 * 2  # block3 at stride 16: 64x48 -> 4x3, 32x24 -> 2x2
  _check_local(outputs, expected, BLOCK3_CHANNELS)


def test_backbone_size_mismatch_names_model_config_not_the_autoencoder(workdir, delf_ckpt):
  """Issue 8 (11): a tiny-backbone checkpoint without model_config.json, exported as ResNet-50."""
  prefix, _ = delf_ckpt
  bare = workdir / "bare_ckpt"
  bare.mkdir(exist_ok=True)
  for path in glob.glob(prefix + ".*"):
    shutil.copy(path, bare)
  ckpt = str(bare / os.path.basename(prefix))
  target = str(workdir / "never_backbone")
  with pytest.raises(SystemExit) as raised:
    run_export(
      "export_local_model", f"--ckpt_path={ckpt}", f"--export_path={target}", "--nouse_autoencoder"
    )
  message = str(raised.value.code)
  assert "\n" not in message
  assert "block counts [1, 1, 1, 1]" in message and "[3, 4, 6, 3]" in message
  assert "model_config.json" in message
  assert "--autoencoder" not in message and "--use_autoencoder" not in message
  assert not os.path.exists(target)


def test_stale_staging_folders_of_killed_exports_are_removed(workdir, delf_ckpt, capsys):
  """Issue 8 (11): a killed export's hidden staging folder does not stay forever."""
  target = workdir / "after_kill"
  stale_pid = 2**22 + 17  # above the default pid_max: no such process
  stale = workdir / f".after_kill.tmp-{socket.gethostname()}-{stale_pid}-abcd1234"
  live = workdir / f".after_kill.tmp-{socket.gethostname()}-{os.getpid()}-efgh5678"
  foreign = workdir / ".after_kill.tmp-otherhost-12-ijkl"
  for folder in (stale, live, foreign):
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"partial")
  run_export(
    "export_local_model",
    f"--ckpt_path={delf_ckpt[0]}",
    f"--export_path={target}",
    "--nouse_autoencoder",
  )
  assert "Removed 1 staging folder(s) of interrupted exports" in capsys.readouterr().out
  assert not stale.exists()
  assert live.exists() and foreign.exists()  # a running export; another host's, too recent
  assert (target / "saved_model.pb").exists()
  assert not [n for n in os.listdir(workdir) if n.startswith(".after_kill.tmp-") and "abcd" in n]


@pytest.mark.parametrize(
  "script", ["export_local_model", "export_global_model", "export_local_and_global_model"]
)
def test_help_text_cites_no_spec_section(script):
  """Issue 8 (11): the spec is not part of the repository; --help must not point into it."""
  _unregister_script_flags()
  module = cli_harness.load_script(script)
  assert "§" not in module.__doc__ and ".md" not in module.__doc__
  for flag in flags.FLAGS.flags_by_module_dict()[f"scripts.{script}"]:
    assert "§" not in (flag.help or "") and ".md" not in (flag.help or ""), flag.name
