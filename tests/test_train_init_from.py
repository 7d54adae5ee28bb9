"""``train.py --init_from`` (issue 9 §1): a new run from ours or the reference's weights."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from delf.training.config import TrainingConfig
from tests import model_fixtures as mf
from tests import reference_layout
from tests.test_train import TINY_FLAGS, data_flags, run_train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("tiny_tfrecords")
  mf.write_tiny_tfrecords(directory, metadata_num_classes=4)
  return directory


def test_init_from_a_reference_checkpoint_with_other_heads(data_dir, tmp_path, capsys):
  """81-class reference weights into a 4-class run: all but the heads loaded, step 0."""
  tf.keras.utils.set_random_seed(31)
  source = mf.make_tiny_model("Delg", use_dim_reduction=True, num_classes=81)
  prefix = str(tmp_path / "ref" / "delf_tf2-ckpt" / "ckpt-5000")
  reference_layout.write_training_checkpoint(source, prefix, step=5000)
  logdir = tmp_path / "log"
  rc = run_train(
    [
      *TINY_FLAGS,
      *data_flags(data_dir),
      f"--logdir={logdir}",
      "--delg_global_features",
      "--max_iters=1",
      "--initial_lr=0",
      f"--init_from={prefix}",
    ]
  )
  assert rc == 0
  out = capsys.readouterr().out
  assert (
    f"Initialised from {prefix}: a reference-format training checkpoint (step 5000, with "
    "optimizer state) of a DELG" in out
  )
  assert "without classifier heads; new run from step 0" in out
  assert "has 81-class heads, this model 4 classes: desc_fc/att_fc re-initialised randomly" in out
  assert tf.train.latest_checkpoint(str(logdir / "delf_tf2-ckpt")).endswith("ckpt-1")
  # lr 0: trainable weights are exactly the source's (BN moving statistics move).
  reader = tf.train.load_checkpoint(str(logdir / "delf_weights"))
  for key, variable in [
    ("model/backbone/conv1/_kernel", source.backbone.conv1.kernel),
    ("model/backbone/l3a/bn2b/gamma", source.backbone.l3a.bn2b.gamma),
    ("model/autoencoder/conv2/_kernel", source.autoencoder.conv2.kernel),
    ("model/backbone/embedding/_kernel", source.backbone.embedding.kernel),
  ]:
    stored = reader.get_tensor(f"{key}/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(stored, variable.numpy(), err_msg=key)
  assert reader.get_tensor(
    "model/desc_classification/cosine_weights/.ATTRIBUTES/VARIABLE_VALUE"
  ).shape == (32, 4)


def test_init_from_another_architecture_is_refused(data_dir, tmp_path, capsys):
  tf.keras.utils.set_random_seed(32)
  mf.write_tiny_logdir(tmp_path / "ours", "Delf", num_classes=4, use_dim_reduction=False)
  rc = run_train(
    [
      *TINY_FLAGS,
      *data_flags(data_dir),
      f"--logdir={tmp_path / 'log'}",
      "--max_iters=1",
      f"--init_from={tmp_path / 'ours'}",
    ]
  )
  assert rc == 1
  err = capsys.readouterr().err
  assert "train.py: error:" in err
  assert "holds this project's checkpoint (model weights) of a DELF" in err
  assert "without autoencoder, 4 classes: no autoencoder" in err


def test_init_from_excludes_imagenet_checkpoint():
  with pytest.raises(ValueError, match="--init_from and --imagenet_checkpoint exclude each other"):
    TrainingConfig(init_from="a", imagenet_checkpoint="b.h5")
