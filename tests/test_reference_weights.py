"""Reference-format weights into our model (issue 9 §1): name mapping, formats, errors.

Checkpoints in the reference's layout are written from our side by
``tests.reference_layout`` (from the structure training.md §5 describes, not
from the mapping under test), for DELF and DELG, with and without the
autoencoder, with several class counts, as its ``delf_weights``, its
``delf_tf2-ckpt/ckpt-N`` and its exported SavedModel. Loading one into a fresh
model must give exactly the outputs of the model it came from.
``tests/data/reference_checkpoint_layout.json`` lists the variables (paths and
shapes) of real reference checkpoints of the full ResNet-50 models (written by
the reference's train.py, 4 classes); the mapping must produce exactly those.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from delf.model import reference_weights as rw
from delf.model.checkpoint_contents import CheckpointContents
from delf.model.weight_sources import WeightSourceError, inspect_weights, load_weights
from tests import model_fixtures as mf
from tests import reference_layout

KINDS = [("Delf", False), ("Delf", True), ("Delg", False), ("Delg", True)]
LAYOUTS = ("delf_weights", "ckpt", "saved_model")
LAYOUT_FILE = os.path.join(os.path.dirname(__file__), "data", "reference_checkpoint_layout.json")


def images(seed: int = 0) -> tf.Tensor:
  return tf.random.stateless_uniform([2, 64, 64, 3], seed=[seed, 1], minval=-1.0, maxval=1.0)


def outputs(model, x) -> dict[str, np.ndarray]:
  """Everything the model computes: global descriptor, attention, block3, autoencoder, logits."""
  out = model.global_and_local_forward_pass(x, training=False)
  result = {
    "global_descriptor": out["global_descriptor"],
    "attention_prob": out["attention_prob"],
    "attention_prelogits": out["attention_prelogits"],
    "block3": out["block3"],
  }
  if model.use_dim_reduction:
    result["reduced"] = out["reduced"]
    result["expanded"] = out["expanded"]
  if model.num_classes:
    labels = tf.constant([0, 1], tf.int64)
    result["desc_logits"] = model.desc_logits(out["global_descriptor"], labels, training=True)
    result["attn_logits"] = model.attn_logits(out["attention_prelogits"])
  return {k: np.asarray(v) for k, v in result.items()}


@functools.cache
def tiny(model_class: str, autoencoder: bool, num_classes: int):
  """One tiny model per kind and test process (building one takes ~2 s); tests scramble it."""
  tf.keras.utils.set_random_seed(len(model_class) + 10 * autoencoder + num_classes)
  return mf.make_tiny_model(model_class, use_dim_reduction=autoencoder, num_classes=num_classes)


def scramble(model, seed: int) -> None:
  """New random values for every variable (BN variances positive): a 'fresh' model."""
  rng = np.random.default_rng(seed)
  for variable in model.variables:
    value = rng.normal(scale=0.2, size=variable.shape).astype(np.float32)
    if variable.name == "moving_variance":
      value = np.abs(value) + 0.5
    elif variable.name == "scale_factor":
      value = np.float32(40.0 + seed)
    variable.assign(value)


def write(layout: str, model, directory) -> str:
  directory = os.fspath(directory)
  if layout == "delf_weights":
    return reference_layout.write_delf_weights(model, os.path.join(directory, "delf_weights"))
  if layout == "ckpt":
    prefix = os.path.join(directory, "delf_tf2-ckpt", "ckpt-1000")
    reference_layout.write_training_checkpoint(model, prefix, step=1000)
    return prefix
  return reference_layout.write_saved_model(model, os.path.join(directory, "export"))


# ------------------------------------------------------------------------ the mapping


@pytest.mark.parametrize(
  "ours, theirs",
  [
    ("backbone/conv1/kernel", "backbone/conv1/kernel"),
    ("backbone/bn_conv1/moving_variance", "backbone/bn_conv1/moving_variance"),
    ("backbone/res2a/res2a_branch2a/kernel", "backbone/l2a/conv2a/kernel"),
    ("backbone/res4f/bn4f_branch2c/gamma", "backbone/l4f/bn2c/gamma"),
    ("backbone/res5a/res5a_branch1/bias", "backbone/l5a/conv_shortcut/bias"),
    ("backbone/res3a/bn3a_branch1/beta", "backbone/l3a/bn_shortcut/beta"),
    ("backbone/embedding_layer/kernel", "backbone/embedding_layer/kernel"),
    ("attention/attn_conv1/kernel", "attention/conv1/kernel"),
    ("attention/bn_conv1/gamma", "attention/bn_conv1/gamma"),
    ("attention/attn_conv2/bias", "attention/conv2/bias"),
    ("autoencoder/autoenc_conv2/kernel", "autoencoder/conv2/kernel"),
    ("desc_fc/kernel", "desc_classification/kernel"),
    ("desc_fc/cosine_weights", "cosine_weights"),
    ("desc_fc/scale_factor", "scale_factor"),
    ("att_fc/bias", "attn_classification/bias"),
  ],
)
def test_reference_path(ours, theirs):
  assert rw.reference_path(ours) == theirs


@pytest.mark.parametrize("model_class, autoencoder", KINDS)
def test_mapping_matches_the_spec_layout_for_every_variable(model_class, autoencoder):
  model = tiny(model_class, autoencoder, 5)
  scramble(model, 0)
  expected = {path: value for path, (value, _) in reference_layout.reference_values(model).items()}
  mapped = {rw.reference_path(p): v for p, v in rw.model_variables(model).items()}
  assert sorted(mapped) == sorted(expected)
  for path, variable in mapped.items():
    np.testing.assert_array_equal(variable.numpy(), expected[path], err_msg=path)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["delf_noae", "delg_ae"])
def test_mapping_gives_the_real_reference_checkpoint_layout(key):
  """Full ResNet-50: our variables map onto exactly the real reference's paths and shapes."""
  from delf.model.delf_model import Delf, Delg

  with open(LAYOUT_FILE) as f:
    layout = json.load(f)[key]
  cls = Delg if key.startswith("delg") else Delf
  model = cls(use_dim_reduction=key.endswith("_ae"), num_classes=layout["num_classes"])
  mapped = {rw.reference_path(p): list(v.shape) for p, v in rw.model_variables(model).items()}
  assert mapped == layout["delf_weights"]
  if "momentum" in layout:
    # The reference's SGD keeps one momentum per trainable variable, named after it.
    trainable = {rw.reference_path(rw.layer_path(v)) for v in model.trainable_variables}
    assert set(layout["momentum"]) == trainable
    for path, name in layout["momentum"].items():
      assert name.endswith(f"/m/{layout['full_names'][path]}")


# ------------------------------------------------------------------------ loading


@pytest.mark.parametrize("model_class, autoencoder", KINDS)
def test_reference_files_load_and_give_the_same_outputs(tmp_path, model_class, autoencoder):
  model = tiny(model_class, autoencoder, 5)
  scramble(model, 1)
  x = images()
  expected = outputs(model, x)
  paths = {layout: write(layout, model, tmp_path / layout) for layout in LAYOUTS}
  name = "DELG" if model_class == "Delg" else "DELF"
  for seed, (layout, path) in enumerate(paths.items(), start=2):
    source = inspect_weights(path)
    assert source.origin == "reference", layout
    assert (source.model_class, source.use_autoencoder, source.num_classes) == (
      model_class,
      autoencoder,
      5,
    )
    assert source.step == (1000 if layout == "ckpt" else None)
    assert source.describe().startswith("a reference-format"), source.describe()
    assert f"of a {name} (backbone blocks 1,1,1,1, width x0.0625) model" in source.describe()
    scramble(model, seed)
    assert not np.allclose(outputs(model, x)["global_descriptor"], expected["global_descriptor"])
    report = load_weights(model, source)
    assert report.heads_loaded and report.heads_note is None
    got = outputs(model, x)
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{layout}: {key}")


def test_other_class_count_reinitialises_only_the_heads(tmp_path):
  source_model = tiny("Delg", True, 5)
  scramble(source_model, 3)
  x = images()
  expected = outputs(source_model, x)
  path = write("delf_weights", source_model, tmp_path)
  model = tiny("Delg", True, 3)
  scramble(model, 4)
  heads_before = [v.numpy() for v in model.desc_classification.weights]
  report = load_weights(model, inspect_weights(path))
  assert not report.heads_loaded
  assert "5-class heads" in report.heads_note and "3 classes" in report.heads_note
  assert "re-initialised" in report.heads_note
  for before, after in zip(heads_before, model.desc_classification.weights):
    np.testing.assert_array_equal(before, after.numpy())
  got = outputs(model, x)
  for key in ("global_descriptor", "attention_prob", "reduced", "expanded"):
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_training_checkpoint_momentum_is_matched_by_name(tmp_path):
  model = tiny("Delg", True, 5)
  prefix = str(tmp_path / "ckpt-7")
  momentum = reference_layout.write_training_checkpoint(model, prefix, step=7)
  read = rw.read_momentum(CheckpointContents(prefix))
  assert sorted(read) == sorted(momentum)
  for path, value in momentum.items():
    np.testing.assert_array_equal(read[path], value, err_msg=path)
  # and every one belongs to a trainable variable of ours
  to_ours = rw.reference_to_layer_paths(model)
  assert {to_ours[p] for p in read} == {rw.layer_path(v) for v in model.trainable_variables}


# ------------------------------------------------------------------------ writing


@pytest.mark.parametrize("model_class, autoencoder", [("Delf", True), ("Delg", False)])
def test_written_reference_checkpoints_round_trip(tmp_path, model_class, autoencoder):
  model = tiny(model_class, autoencoder, 5)
  scramble(model, 6)
  expected = reference_layout.reference_values(model)
  prefix = rw.write_reference_weights(model, str(tmp_path / "delf_weights"))
  contents = CheckpointContents(prefix)
  assert sorted(contents.variables) == sorted(expected)
  for path, (value, _) in expected.items():
    np.testing.assert_array_equal(contents.read(path), value, err_msg=path)
  directory = str(tmp_path / "delf_tf2-ckpt")
  prefix = rw.write_reference_training_checkpoint(model, directory, step=99)
  assert prefix == os.path.join(directory, "ckpt-99")
  assert tf.train.latest_checkpoint(directory) == prefix  # what the reference resumes from
  source = inspect_weights(prefix)
  assert source.origin == "reference" and source.step == 99
  assert sorted(source.contents.paths("model/")) == sorted("model/" + p for p in expected)


# ------------------------------------------------------------------------ errors


def test_other_architecture_is_described_not_listed(tmp_path):
  path = write("delf_weights", tiny("Delg", True, 5), tmp_path)
  with pytest.raises(WeightSourceError) as error:
    load_weights(tiny("Delf", False, 5), inspect_weights(path))
  message = str(error.value)
  assert "holds a reference-format checkpoint (model weights) of a DELG" in message
  assert "with autoencoder (16-d), 5 classes" in message
  assert "DELG instead of DELF" in message
  assert "16-d autoencoder the model does not have" in message
  assert "missing" not in message


def test_partial_reference_checkpoint_names_what_is_missing(tmp_path):
  model = tiny("Delf", True, 5)
  prefix = reference_layout.write_delf_weights(
    model,
    str(tmp_path / "delf_weights"),
    drop={"backbone/l3a/conv2b/kernel", "attention/bn_conv1/gamma"},
  )
  with pytest.raises(WeightSourceError) as error:
    load_weights(model, inspect_weights(prefix))
  message = str(error.value)
  assert "2 missing" in message
  assert "backbone/res3a/res3a_branch2b/kernel" in message
  assert "attention/bn_conv1/gamma" in message


def test_a_checkpoint_of_neither_kind_says_what_it_holds(tmp_path):
  holder = tf.Module()
  holder.dense = tf.Variable(np.zeros([3, 4], np.float32))
  prefix = tf.train.Checkpoint(net=holder).write(str(tmp_path / "other"))
  with pytest.raises(WeightSourceError, match=r"a TF checkpoint with 1 variables: net/dense; "):
    inspect_weights(prefix)
  h5 = tmp_path / "weights.h5"
  h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
  with pytest.raises(WeightSourceError, match="an HDF5 file"):
    inspect_weights(str(h5))
  with pytest.raises(WeightSourceError, match="no such file"):
    inspect_weights(str(tmp_path / "nothing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(WeightSourceError, match=r"neither saved_model\.pb nor a checkpoint"):
    inspect_weights(str(tmp_path / "empty"))


def test_our_own_checkpoints_are_recognised_too(tmp_path):
  saved = mf.write_tiny_logdir(tmp_path / "log", "Delg", num_classes=5, use_dim_reduction=True)
  source = inspect_weights(str(tmp_path / "log"))
  assert source.origin == "ours" and source.model_prefix == "model/"
  assert source.describe().startswith("this project's checkpoint (model weights) of a DELG")
  assert source.num_classes == 5 and source.reduced_dimension == 16
  model = tiny("Delg", True, 5)
  scramble(model, 12)
  load_weights(model, source)
  x = images()
  np.testing.assert_array_equal(outputs(model, x)["desc_logits"], outputs(saved, x)["desc_logits"])
