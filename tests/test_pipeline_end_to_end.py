"""The whole user path through the CLIs, each stage consuming the previous stage's files.

demo data -> build_image_dataset -> train (DELG + autoencoder, tiny backbone) -> the three
export scripts (backbone size read from the logdir's model_config.json, model flags as in
training) -> extract_features -> match_images -> PNG. Other tests check each stage in
depth; this one catches breaks between them (file names, defaults, configs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from delf import demo_summary, feature_io, matching
from delf.data import view_homographies
from tests.cli_harness import run_script

tf = pytest.importorskip("tensorflow")

# Model flags as in training, passed to each export that has them.
LOCAL_FLAGS = ["--local_feature_map_channels=64", "--autoencoder_dimensions=16"]
GLOBAL_FLAGS = ["--delg_embedding_layer_dim=32"]


def info_validation_size(tfrecord_dir) -> int:
  """The validation split's size from the build's dataset_metadata.json."""
  metadata = json.loads((tfrecord_dir / "dataset_metadata.json").read_text())
  return metadata["num_examples"]["validation"]


def test_demo_data_to_matched_images(tmp_path, capsys):
  from delf.data import demo

  info = demo.make_demo_dataset(
    tmp_path / "gldv2", num_landmarks=3, images_per_landmark=3, image_size=(96, 128)
  )
  run_script(
    "build_image_dataset",
    [
      f"--train_csv_path={info.root}/train/train.csv",
      f"--train_clean_csv_path={info.root}/train/train_clean.csv",
      f"--train_directory={info.root}/train/*/*/*/",
      f"--output_directory={tmp_path}/tfrecord",
      "--num_shards=2",
      "--generate_train_validation_splits",
      "--num_workers=1",
    ],
  )
  logdir = tmp_path / "training"
  capsys.readouterr()
  status = run_script(
    "train",
    [
      f"--train_file_pattern={tmp_path}/tfrecord/train-*",
      f"--validation_file_pattern={tmp_path}/tfrecord/validation-*",
      f"--logdir={logdir}",
      "--delg_global_features",
      "--image_size=64",
      "--batch_size=4",
      "--max_iters=2",
      "--eval_interval=2",  # as demo.sh: validate at the last step
      "--deterministic",
      "--backbone_block_counts=1,1,1,1",
      "--backbone_width_factor=0.0625",
      *LOCAL_FLAGS,
      *GLOBAL_FLAGS,
    ],
  )
  assert status == 0
  # The attention accuracy the demo's summary reports, parsed from train.py's output.
  training = demo_summary.parse_training_log(capsys.readouterr().out)
  assert training.step == 2 and training.validation_step == 2
  assert training.validation_images == info_validation_size(tmp_path / "tfrecord")
  assert 0.0 <= training.validation_attn_accuracy <= 1.0
  assert 0.0 <= training.train_attn_accuracy <= 1.0
  ckpt = f"--ckpt_path={logdir}/delf_weights"

  exports = tmp_path / "exports"
  run_script("export_local_model", [ckpt, f"--export_path={exports}/local", *LOCAL_FLAGS])
  run_script(
    "export_global_model",
    [ckpt, f"--export_path={exports}/global", "--delg_global_features", *GLOBAL_FLAGS],
  )
  run_script(
    "export_local_and_global_model",
    [ckpt, f"--export_path={exports}/local_and_global", *LOCAL_FLAGS, *GLOBAL_FLAGS],
  )

  # The global and combined exports answer through the reference's signature.
  image = np.asarray(Image.open(info.path("index", info.index_ids[0])))
  global_outputs = tf.saved_model.load(str(exports / "global")).signatures["serving_default"](
    input_image=tf.constant(image),
    input_scales=tf.constant([0.5, 1.0]),
    input_global_scales_ind=tf.constant([0, 1]),
  )
  assert global_outputs["global_descriptors"].shape == (2, 32)
  combined = tf.saved_model.load(str(exports / "local_and_global")).signatures["serving_default"]
  outputs = combined(
    input_image=tf.constant(image),
    input_scales=tf.constant([1.0]),
    input_max_feature_num=tf.constant(50),
    input_abs_thres=tf.constant(0.0),
    input_global_scales_ind=tf.constant([0]),
  )
  assert outputs["features"].shape[1] == 16 and outputs["global_descriptors"].shape == (1, 32)

  # Two views of the same landmark -> .delf files -> the match picture.
  landmark = next(info.labels[i] for i in info.index_ids if info.labels[i] is not None)
  pair = [i for i in info.index_ids if info.labels[i] == landmark][:2]
  images = [str(info.path("index", image_id)) for image_id in pair]
  listing = tmp_path / "list_images.txt"
  listing.write_text("\n".join(images) + "\n")
  config = tmp_path / "config.pbtxt"
  config.write_text(
    f'model_path: "{exports}/local"\n'
    "image_scales: 0.7071\nimage_scales: 1.0\nimage_scales: 1.4142\n"
    "is_tf2_exported: true\n"
    "delf_local_config { use_pca: false max_feature_num: 100 score_threshold: 0.0 }\n"
  )
  features = tmp_path / "features"
  status = run_script(
    "extract_features",
    [f"--config_path={config}", f"--list_images_path={listing}", f"--output_dir={features}"],
  )
  assert status == 0
  feature_files = [features / f"{image_id}.delf" for image_id in pair]
  for path in feature_files:
    _, _, descriptors, _, _ = feature_io.ReadFromFile(str(path))
    assert descriptors.shape[1] == 16
  # The pair's ground-truth homography, as demo.sh writes it from the generator's views.
  ground_truth = tmp_path / "pair_homography.json"
  view_homographies.write_pair_homography(info.root, pair[0], pair[1], ground_truth)
  capsys.readouterr()
  picture = tmp_path / "matched_images.png"
  status = run_script(
    "match_images",
    [
      f"--image_1_path={images[0]}",
      f"--image_2_path={images[1]}",
      f"--features_1_path={feature_files[0]}",
      f"--features_2_path={feature_files[1]}",
      f"--output_image={picture}",
      f"--homography_path={ground_truth}",
      "--homography_tolerance_px=16",
    ],
  )
  assert status == 0
  matched = capsys.readouterr().out
  figures = demo_summary.parse_match_log(matched)  # what the demo's summary reads
  # Oracle: the same match, and each inlier's distance to the generator's true position.
  features_1, features_2 = (matching.LocalFeatures.from_file(str(p)) for p in feature_files)
  result = matching.match(features_1, features_2)
  h = np.array(json.loads(ground_truth.read_text())["homography"])
  y1, x1 = features_1.locations[result.pairs[:, 0]].T
  projected = h @ np.stack([x1, y1, np.ones_like(x1)])
  y2, x2 = features_2.locations[result.pairs[:, 1]].T
  errors = np.hypot(projected[0] / projected[2] - x2, projected[1] / projected[2] - y2)
  assert figures.inliers == result.num_inliers
  assert figures.correct_inliers == int(np.sum(result.inliers & (errors <= 16.0)))
  assert figures.tolerance_px == 16.0
  assert figures.correct_percent == pytest.approx(
    100 * figures.correct_inliers / max(figures.inliers, 1), abs=0.5
  )
  with Image.open(picture) as png:
    assert png.format == "PNG"
