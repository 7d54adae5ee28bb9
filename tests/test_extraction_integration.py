"""Checkpoint -> export_local_model.py -> extract_features.py -> match_images.py, tiny DELF.

The whole user path of the README with a tiny randomly initialised model (one block
per stage, width 1/4, 16-D autoencoder): the TF2 export written by our exporter is
read by MakeExtractor through the TF2 example config's settings, the .delf files it
writes are what match_images.py reads, and the picture is written.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf
from PIL import Image

from delf import feature_io
from delf.export import exporter  # noqa: F401 - an import error must fail, not skip
from delf.model.delf_model import Delf
from tests import cli_harness

SCALES = (0.7071, 1.0, 1.4142)


run_script = cli_harness.run_script


def _demo_views(directory):
  from delf.data import demo

  sources = demo.landmark_source_images()
  rng = np.random.default_rng(0)
  paths = []
  for i, source in enumerate([sources[0], sources[0], sources[1]]):
    view, _ = demo.render_landmark_view(source, rng, (240, 320), difficulty=0.3)
    path = directory / f"view_{i}.jpg"
    Image.fromarray(view).save(path)
    paths.append(str(path))
  return paths


def test_checkpoint_to_matched_images(tmp_path, capsys):
  tf.keras.utils.set_random_seed(0)
  model = Delf(
    use_dim_reduction=True,
    reduced_dimension=16,
    dim_expand_channels=256,
    block_counts=(1, 1, 1, 1),
    width_factor=0.25,
  )
  assert model.local_feature_channels == 256
  logdir = tmp_path / "logdir"
  logdir.mkdir()
  tf.train.Checkpoint(model=model).write(str(logdir / "delf_weights"))
  (logdir / "model_config.json").write_text(
    json.dumps({"model_class": "Delf", "config": model.get_config(), "format_version": 1})
  )
  export_path = tmp_path / "gldv2_model_local"
  run_script(
    "export_local_model",
    ckpt_path=str(logdir / "delf_weights"),
    export_path=str(export_path),
    autoencoder_dimensions=16,
    local_feature_map_channels=256,
  )
  assert (export_path / "saved_model.pb").is_file()

  images = _demo_views(tmp_path)
  config = tmp_path / "config.pbtxt"
  config.write_text(
    f'model_path: "{export_path}"\n'
    + "".join(f"image_scales: {s}\n" for s in SCALES)
    + "is_tf2_exported: true\n"
    + "delf_local_config { use_pca: false max_feature_num: 200 score_threshold: 0.0 }\n"
  )
  listing = tmp_path / "list.txt"
  listing.write_text("\n".join(images) + "\n")
  features_dir = tmp_path / "features"
  status = run_script(
    "extract_features",
    config_path=str(config),
    list_images_path=str(listing),
    output_dir=str(features_dir),
  )
  assert status == 0
  for i in range(3):
    locations, scales, descriptors, attention, _ = feature_io.ReadFromFile(
      str(features_dir / f"view_{i}.delf")
    )
    assert descriptors.shape == (200, 16)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, rtol=1e-5)
    assert set(np.round(1 / scales, 3)) <= {round(s, 3) for s in SCALES}
    assert np.all(np.diff(attention) <= 0)  # Sorted by descending attention.
    # Box centres are stride 32 * (row, col) / scale: inside the 240x320 image grid.
    assert locations.min() >= 0 and locations[:, 0].max() < 240 + 32 / 0.7071
    assert locations[:, 1].max() < 320 + 32 / 0.7071
  capsys.readouterr()

  output = tmp_path / "matched_images.png"
  status = run_script(
    "match_images",
    image_1_path=images[0],
    image_2_path=images[1],
    features_1_path=str(features_dir / "view_0.delf"),
    features_2_path=str(features_dir / "view_1.delf"),
    output_image=str(output),
  )
  assert status == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[:2] == ["Loaded image 1's 200 features", "Loaded image 2's 200 features"]
  assert lines[-1].startswith("Found ") and lines[-1].endswith(" inliers")
  with Image.open(output) as picture:
    assert picture.format == "PNG"
