"""Exports from reference-format checkpoints and SavedModels (issue 9 §1).

The oracle is our own path: the same tiny model exported from our
``delf_weights`` and from the reference's layouts (written by
``tests.reference_layout``) must give the same SavedModel outputs, and the
refusals must say what the checkpoint holds.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from delf.export import exporter, reference_checkpoint
from delf.model.delf_model import Delf, Delg
from tests import reference_layout
from tests.test_export_models import (
  AE_DIM,
  BLOCK3_CHANNELS,
  EMBEDDING_DIM,
  TINY,
  run_export,
  write_training_logdir,
)

DELG_FLAGS = (
  f"--delg_embedding_layer_dim={EMBEDDING_DIM}",
  f"--autoencoder_dimensions={AE_DIM}",
  f"--local_feature_map_channels={BLOCK3_CHANNELS}",
)


@pytest.fixture(scope="module")
def delg_model():
  tf.keras.utils.set_random_seed(21)
  return Delg(
    num_classes=7,
    use_dim_reduction=True,
    reduced_dimension=AE_DIM,
    dim_expand_channels=BLOCK3_CHANNELS,
    embedding_layer_dim=EMBEDDING_DIM,
    **TINY,
  )


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory, delg_model):
  """The tiny DELG in the reference's three layouts, plus our own logdir."""
  root = tmp_path_factory.mktemp("reference_files")
  ckpt = str(root / "ref_logdir" / "delf_tf2-ckpt" / "ckpt-300")
  reference_layout.write_training_checkpoint(delg_model, ckpt, step=300)
  return {
    "delf_weights": reference_layout.write_delf_weights(
      delg_model, str(root / "ref_logdir" / "delf_weights")
    ),
    "ckpt": ckpt,
    "saved_model": reference_layout.write_saved_model(delg_model, str(root / "ref_export")),
    "ours": write_training_logdir(root / "our_logdir", delg_model),
    "root": root,
  }


def _serve(export_path: str, image: np.ndarray) -> dict[str, np.ndarray]:
  served = tf.saved_model.load(export_path).signatures["serving_default"]
  outputs = served(
    input_image=tf.constant(image),
    input_scales=tf.constant([0.5, 1.0]),
    input_max_feature_num=tf.constant(50),
    input_abs_thres=tf.constant(0.0),
    input_global_scales_ind=tf.constant([0, 1]),
  )
  return {k: v.numpy() for k, v in outputs.items()}


def test_local_and_global_export_of_a_reference_checkpoint_equals_ours(reference_files, capsys):
  root = reference_files["root"]
  ours, theirs = str(root / "from_ours"), str(root / "from_reference_ckpt")
  run_export(
    "export_local_and_global_model",
    f"--ckpt_path={reference_files['ours']}",
    f"--export_path={ours}",
    *DELG_FLAGS,
  )
  run_export(
    "export_local_and_global_model",
    f"--ckpt_path={reference_files['ckpt']}",
    f"--export_path={theirs}",
    *DELG_FLAGS,
  )
  out = capsys.readouterr().out
  assert "Loaded a reference-format training checkpoint (step 300, with optimizer state)" in out
  image = np.random.default_rng(0).integers(0, 256, size=(80, 112, 3), dtype=np.uint8)
  expected, got = _serve(ours, image), _serve(theirs, image)
  assert sorted(got) == sorted(expected)
  assert expected["features"].shape[0] > 0
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


@pytest.mark.parametrize("layout", ["delf_weights", "saved_model"])
def test_global_model_loads_from_reference_weights_and_exports(reference_files, delg_model, layout):
  """The published-model layout (a SavedModel) and delf_weights feed a global export."""
  config = exporter.GlobalExportConfig(
    export_path="unused",
    ckpt_path=reference_files[layout],
    delg_global_features=True,
    delg_embedding_layer_dim=EMBEDDING_DIM,
  )
  source = reference_checkpoint.inspect_export_checkpoint(config.ckpt_path)
  assert reference_checkpoint.uses_reference_loader(source)
  model = exporter.build_export_model(config, source.model_config())
  reference_checkpoint.load_reference_and_verify(
    model, source, config, global_only=True, local_only=False
  )
  images = tf.random.stateless_uniform([1, 64, 80, 3], seed=[3, 4], minval=-1.0, maxval=1.0)
  np.testing.assert_allclose(
    model.global_call(images), delg_model.global_call(images), rtol=1e-6, atol=1e-6
  )


def test_flags_that_differ_from_a_reference_checkpoint_are_named(reference_files):
  path = str(reference_files["root"] / "refused")
  with pytest.raises(SystemExit) as raised:
    run_export(
      "export_local_model",
      f"--ckpt_path={reference_files['delf_weights']}",
      f"--export_path={path}",
      "--nouse_autoencoder",
    )
  message = str(raised.value.code)
  assert "\n" not in message
  assert "holds a reference-format checkpoint (model weights) of a DELG" in message
  assert "with autoencoder (16-d), 7 classes" in message
  assert "--nouse_autoencoder (training used --use_autoencoder)" in message
  assert "variables not in the checkpoint" not in message
  assert not os.path.exists(path)


def test_a_checkpoint_of_neither_kind_is_described(tmp_path):
  holder = tf.Module()
  holder.kernel = tf.Variable(np.ones([2, 2], np.float32))
  prefix = tf.train.Checkpoint(layer=holder).write(str(tmp_path / "delf_weights"))
  with pytest.raises(SystemExit) as raised:
    run_export("export_local_model", f"--ckpt_path={prefix}", f"--export_path={tmp_path / 'x'}")
  message = str(raised.value.code)
  assert "a TF checkpoint with 1 variables: layer/kernel" in message
  assert "neither this project's nor the reference's DELF/DELG layout" in message


def test_reference_checkpoint_with_a_missing_variable(tmp_path):
  tf.keras.utils.set_random_seed(5)
  model = Delf(num_classes=3, **TINY)
  prefix = reference_layout.write_delf_weights(
    model, str(tmp_path / "delf_weights"), drop={"backbone/l4a/bn2b/moving_mean"}
  )
  with pytest.raises(SystemExit) as raised:
    run_export(
      "export_local_model",
      f"--ckpt_path={prefix}",
      f"--export_path={tmp_path / 'x'}",
      "--nouse_autoencoder",
    )
  message = str(raised.value.code)
  assert "holds a reference-format checkpoint (model weights) of a DELF" in message
  assert "1 missing (backbone/res4a/bn4a_branch2b/moving_mean)" in message


def test_our_own_savedmodel_is_accepted_as_ckpt_path(tmp_path, delg_model):
  """A SavedModel of ours (module attribute ``model``) loads like our checkpoints."""
  module = tf.Module()
  module.model = delg_model
  tf.saved_model.save(module, str(tmp_path / "ours_export"))
  source = reference_checkpoint.inspect_export_checkpoint(str(tmp_path / "ours_export"))
  assert source.origin == "ours" and source.container == "saved_model"
  assert not reference_checkpoint.uses_reference_loader(source)
  config = exporter.GlobalExportConfig(
    export_path="unused",
    ckpt_path=str(tmp_path / "ours_export"),
    delg_global_features=True,
    delg_embedding_layer_dim=EMBEDDING_DIM,
  )
  model = exporter.build_export_model(config, source.model_config())
  exporter.load_and_verify(model, source.prefix, config, None, global_only=True)
  images = tf.random.stateless_uniform([1, 64, 80, 3], seed=[5, 6], minval=-1.0, maxval=1.0)
  np.testing.assert_array_equal(model.global_call(images), delg_model.global_call(images))
