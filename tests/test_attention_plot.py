"""Attention pictures (issue 11): grid recovery, colours, the PNG, the script, TensorBoard.

The dense map is checked against the in-memory Keras model of a tiny exported
checkpoint; colours against the colour map's direction (blue = low, red = high)
on a flat grey photo; the script end to end on a real photo (scikit-image's cat).
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from PIL import Image

from delf import attention_plot
from delf.extraction import config_io
from delf.extraction import extractor as extractor_lib
from tests import cli_harness
from tests import model_fixtures as mf

RF, PADDING = 291, 145  # receptive field and padding of a block3 cell (receptive_field.py)


def receptive_boxes(rows: int, cols: int, stride: float, scale: float) -> np.ndarray:
  """Hand-computed boxes of a ``rows x cols`` map, divided by the scale, row-major."""
  y, x = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
  corners = np.stack([y, x, y, x], axis=-1).reshape(-1, 4) * stride
  bias = np.array([-PADDING, -PADDING, RF - 1 - PADDING, RF - 1 - PADDING])
  return (corners + bias) / scale


def redness(pixels: np.ndarray) -> np.ndarray:
  """Red minus blue: positive at the high end of turbo, negative at the low end."""
  pixels = np.asarray(pixels, np.float64)
  return pixels[..., 0] - pixels[..., 2]


# ------------------------------------------------------------------ pure functions


@pytest.mark.parametrize("stride,scale", [(32, 0.5), (16, 1.0), (32, 1.4142135)])
def test_attention_grid_recovers_rows_columns_and_stride(stride, scale):
  rows, cols = 3, 5
  boxes = receptive_boxes(rows, cols, stride, scale)
  scores = np.arange(rows * cols, dtype=np.float32) * 0.5
  order = np.random.default_rng(0).permutation(rows * cols)  # the export sorts by score
  grid, found_stride = attention_grid_of(boxes[order], scores[order], scale)
  assert found_stride == stride
  np.testing.assert_array_equal(grid, scores.reshape(rows, cols))


def attention_grid_of(boxes, scores, scale):
  return attention_plot.attention_grid(boxes.astype(np.float32), scores, scale)


def test_attention_grid_leaves_missing_cells_nan():
  boxes = receptive_boxes(2, 2, 16, 1.0)
  grid, _ = attention_plot.attention_grid(boxes[[0, 1, 3]], np.array([1.0, 2.0, 4.0]), 1.0)
  assert np.isnan(grid[1, 0]) and grid[1, 1] == 4.0


def test_upsample_is_bilinear_between_cell_centres():
  grid = np.array([[0.0, 1.0], [2.0, 3.0]])
  heat = attention_plot.upsample(grid, 15, 15, (10.0, 10.0))
  assert heat.shape == (15, 15)
  assert heat[0, 0] == 0.0 and heat[10, 10] == 3.0  # cell centres
  assert heat[5, 5] == pytest.approx(1.5)  # centre of the four
  assert heat[0, 5] == pytest.approx(0.5) and heat[5, 0] == pytest.approx(1.0)
  assert heat[14, 14] == 3.0  # beyond the last centre: clamped
  # Anisotropic spacing (resized images): x spacing 5 reaches column 1 at pixel 5.
  assert attention_plot.upsample(grid, 3, 8, (10.0, 5.0))[0, 5] == 1.0


def test_overlay_colours_high_attention_red_and_low_blue():
  image = np.full([20, 40, 3], 128, np.uint8)
  heat = np.zeros([20, 40])
  heat[:, 20:] = 1.0
  heat[0, 0] = np.nan
  out = attention_plot.overlay(image, heat, 0.0, 1.0)
  assert out.dtype == np.uint8 and out.shape == image.shape
  assert (redness(out[1:, :20]) < -5).all()  # low: blue side of turbo
  assert (redness(out[:, 20:]) > 40).all()  # high: red side
  np.testing.assert_array_equal(out[0, 0], [128, 128, 128])  # NaN: photo untouched
  # Half-and-half blend with the colour map's end colours.
  low, high = attention_plot.colourize(np.array([0.0, 1.0]), 0.0, 1.0) * 255
  np.testing.assert_allclose(out[5, 5], np.round((128 + low) / 2), atol=1)
  np.testing.assert_allclose(out[5, 30], np.round((128 + high) / 2), atol=1)


def test_batch_overlays_put_red_on_each_images_hottest_cell():
  images = np.zeros([2, 64, 64, 3], np.float32)  # grey after (x + 1) / 2
  prob = np.full([2, 4, 4, 1], 0.1, np.float32)
  prob[0, 1, 2] = 5.0  # centred at pixel (16, 32)
  prob[1, 3, 0] = 0.7  # a smaller maximum still reaches red (per-image scaling)
  out = attention_plot.batch_overlays(images, prob)
  assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8
  assert redness(out[0, 16, 32]) > 40 and redness(out[0, 48, 0]) < 0
  assert redness(out[1, 48, 0]) > 40 and redness(out[1, 16, 32]) < 0


def test_plot_attention_png_size_colours_colorbar_and_title(tmp_path):
  image = np.full([120, 200, 3], 128, np.uint8)
  heat = np.tile(np.linspace(0.0, 2.0, 200), (120, 1))  # low on the left, high on the right
  keypoints = np.array([[60.0, 190.0], [20.0, 150.0]])
  path = str(tmp_path / "picture.png")
  picture = attention_plot.plot_attention(
    path, image, heat, keypoints, "cat.jpg: scale 1", 0.0, 2.0, score_threshold=1.0
  )
  png = np.asarray(Image.open(path).convert("RGB"))
  assert (png.shape[1], png.shape[0]) == picture.size
  assert picture.size[0] >= 480 + 100  # photo enlarged to 480 px wide, plus the colour bar
  assert picture.title == "cat.jpg: scale 1" and picture.num_keypoints == 2
  assert "attention" in picture.colorbar_label and (picture.vmin, picture.vmax) == (0.0, 2.0)
  assert os.listdir(tmp_path) == ["picture.png"]  # atomic: no temporary left
  left, top, right, bottom = picture.image_box
  assert 480 <= right - left < picture.size[0] - 60  # 200 px photo enlarged, bar beside
  assert (bottom - top) / (right - left) == pytest.approx(120 / 200, abs=0.02)
  middle = (top + bottom) // 2
  assert redness(png[middle, left + 5 : left + 40]).max() < 0  # low attention: blue
  assert redness(png[top + 5 : top + 20, right - 60 : right - 30]).min() > 40  # high: red
  assert png[top:bottom, left:right].std() > 20  # not a constant picture
  # The colour bar right of the photo: red at its top, blue at its bottom.
  strip = png[top + 5 : bottom - 5, right + 5 :]
  red_columns = np.where(redness(strip[:5]).min(axis=0) > 40)[0]
  assert red_columns.size >= 5
  assert (redness(strip[-5:, red_columns]) < 0).all()
  # The kept keypoint drawn as a white ring around (60, 190) -> pixels in the picture.
  scale = (right - left) / 200
  ring = png[
    round(top + 60 * scale) - 8 : round(top + 60 * scale) + 9,
    round(left + 190 * scale) - 8 : round(left + 190 * scale) + 9,
  ]
  assert (ring.min(axis=-1) > 230).any()


# ------------------------------------------------------------------ with a tiny export


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
  """A tiny DELF checkpoint with the autoencoder, exported by export_local_model.py."""
  import tensorflow as tf

  workdir = tmp_path_factory.mktemp("attention")
  tf.keras.utils.set_random_seed(3)
  model = mf.write_tiny_logdir(
    workdir / "logdir", model_class="Delf", num_classes=5, use_dim_reduction=True
  )
  export_path = str(workdir / "delf_local")
  cli_harness.run_script(
    "export_local_model",
    [
      f"--ckpt_path={workdir / 'logdir' / 'delf_weights'}",
      f"--export_path={export_path}",
      "--autoencoder_dimensions=16",
      f"--local_feature_map_channels={mf.TINY_LOCAL_CHANNELS}",
    ],
  )
  return export_path, model


@pytest.fixture(scope="module")
def cat_path(tmp_path_factory):
  from skimage import data

  path = tmp_path_factory.mktemp("images") / "chelsea.jpg"
  Image.fromarray(data.chelsea()).save(path, quality=92)  # 300 x 451 px
  return str(path)


def write_config(path, export_path: str, scales, threshold: float, max_features: int, **extra):
  lines = [f'model_path: "{export_path}"', "is_tf2_exported: true"]
  lines += [f"image_scales: {s}" for s in scales]
  lines += [f"{key}: {value}" for key, value in extra.items()]
  lines.append(
    f"delf_local_config {{ use_pca: false max_feature_num: {max_features} "
    f"score_threshold: {threshold} }}"
  )
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def plain_extractor(export_path: str):
  config = config_io.parse_delf_config(
    f'model_path: "{export_path}" is_tf2_exported: true image_scales: 1.0 '
    "delf_local_config { use_pca: false }"
  )
  return extractor_lib.MakeExtractor(config)


def test_dense_map_is_the_models_attention(tiny_export, cat_path):
  import tensorflow as tf

  export_path, model = tiny_export
  extractor = plain_extractor(export_path)
  image = np.array(Image.open(cat_path))
  boxes, scores = extractor.local_cells(image, [0.5], -np.inf, attention_plot.ALL_CELLS)
  grid, stride = attention_plot.attention_grid(boxes, scores, 0.5)
  # Oracle: the Keras model on the normalised image resized to the scale (pyramid.py).
  normalised = (tf.cast(image[None], tf.float32) - 128.0) / 128.0
  resized = tf.image.resize(normalised, [150, 226], method="bilinear")
  expected = model.build_call(resized, training=False)["attention_prob"].numpy()[0, ..., 0]
  assert stride == 32 and grid.shape == expected.shape and grid.size == scores.size
  np.testing.assert_allclose(grid, expected, rtol=1e-5, atol=1e-6)


def test_picture_shows_the_models_attention_through_the_colour_map(tiny_export, cat_path, tmp_path):
  export_path, _ = tiny_export
  extractor = plain_extractor(export_path)
  (picture,) = attention_plot.draw_image_attention(extractor, cat_path, [1.0], str(tmp_path))
  image = np.array(Image.open(cat_path))
  boxes, scores = extractor.local_cells(image, [1.0], -np.inf, attention_plot.ALL_CELLS)
  grid, stride = attention_plot.attention_grid(boxes, scores, 1.0)
  heat = attention_plot.upsample(grid, *image.shape[:2], (stride, stride))
  expected = attention_plot.overlay(image, heat, grid.min(), grid.max())
  reversed_colours = attention_plot.overlay(image, -heat, -grid.max(), -grid.min())
  left, top, right, bottom = picture.image_box
  png = Image.open(picture.path).convert("RGB").crop((left, top, right, bottom))
  shown = np.asarray(png.resize(image.shape[1::-1], Image.BILINEAR), np.float64)
  error = np.median(np.abs(shown - expected))
  assert error < 6  # the picture is the photo blended with the attention's colours
  assert np.median(np.abs(shown - reversed_colours)) > 3 * error + 10  # in that direction
  assert np.median(np.abs(shown - image)) > 3 * error + 10  # and the colours are there


def test_script_end_to_end_on_a_real_photo(tiny_export, cat_path, tmp_path, capsys):
  export_path, _ = tiny_export
  config_path = write_config(tmp_path / "config.pbtxt", export_path, [0.5, 1.0], 0.0, 7)
  (tmp_path / "list.txt").write_text(cat_path + "\n")
  output_dir = tmp_path / "pictures"
  rc = cli_harness.run_script(
    "visualize_attention",
    [
      f"--config_path={config_path}",
      f"--list_images_path={tmp_path / 'list.txt'}",
      f"--output_dir={output_dir}",
    ],
  )
  assert rc == 0
  out = capsys.readouterr().out
  names = sorted(os.listdir(output_dir))
  assert names == ["chelsea_attention_scale0.5.png", "chelsea_attention_scale1.png"]
  assert out.count("7 keypoints kept") == 2  # max_feature_num of the config
  for name in names:
    png = np.asarray(Image.open(output_dir / name).convert("RGB"))
    assert png.shape[1] >= 480 + 100 and png.shape[0] >= 480 * 300 / 451
    assert png.std() > 20


def test_kept_keypoints_follow_threshold_and_feature_count(tiny_export, cat_path, tmp_path, capsys):
  export_path, _ = tiny_export
  image = np.array(Image.open(cat_path))
  _, scores = plain_extractor(export_path).local_cells(
    image, [1.0], -np.inf, attention_plot.ALL_CELLS
  )
  threshold = float(np.median(scores))
  expected = int((scores >= threshold).sum())
  rc = cli_harness.run_script(
    "visualize_attention",
    [
      f"--model_path={export_path}",
      f"--image_paths={cat_path}",
      f"--score_threshold={threshold!r}",
      "--max_feature_num=1000",
      f"--output_dir={tmp_path}",
    ],
  )
  assert rc == 0
  assert f"Wrote {tmp_path / 'chelsea_attention_scale1.png'}: {expected} keypoints kept" in (
    capsys.readouterr().out
  )
  assert 0 < expected < scores.size


@pytest.mark.parametrize(
  "args,message",
  [
    (["--image_paths={missing}"], "image not found: {missing}"),
    (["--image_paths={cat}", "--scales=1.0,0"], "--scales must be positive, got 0"),
    (["--image_paths={cat}", "--scales=-0.5"], "--scales must be positive, got -0.5"),
    (["--image_paths={cat}", "--model_path={missing}"], "model directory not found: {missing}"),
    (["--image_paths={cat}", "--model_path={not_a_model}"], "{not_a_model}"),
    (["--image_paths={cat}", "--config_path={missing}"], "config file not found: {missing}"),
    (["--list_images_path={missing}"], "image list not found: {missing}"),
    ([], "no images"),
  ],
)
def test_bad_inputs_fail_with_one_line_naming_the_file(
  tiny_export, cat_path, tmp_path, capsys, args, message
):
  names = {
    "missing": str(tmp_path / "nope.jpg"),
    "cat": cat_path,
    "not_a_model": str(tmp_path),
  }
  args = [a.format(**names) for a in args]
  if not any(a.startswith(("--model_path", "--config_path")) for a in args):
    args.append(f"--model_path={tiny_export[0]}")
  rc = cli_harness.run_script("visualize_attention", [*args, f"--output_dir={tmp_path / 'out'}"])
  assert rc == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("Error: ")
  assert message.format(**names) in err[0]
  assert not glob.glob(str(tmp_path / "out" / "*.png"))


def test_unreadable_image_is_named_and_the_others_still_drawn(tiny_export, cat_path, tmp_path):
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not an image")
  rc = cli_harness.run_script(
    "visualize_attention",
    [
      f"--model_path={tiny_export[0]}",
      f"--image_paths={bad},{cat_path}",
      f"--output_dir={tmp_path / 'out'}",
    ],
  )
  assert rc == 1
  assert os.listdir(tmp_path / "out") == ["chelsea_attention_scale1.png"]


# ------------------------------------------------------------------ TensorBoard


def test_training_writes_attention_overlays_at_each_report(tmp_path_factory):
  import tensorflow as tf

  from delf.training import summaries
  from delf.training.config import TrainingConfig
  from delf.training.loop import train

  data_dir = tmp_path_factory.mktemp("tfrecords")
  mf.write_tiny_tfrecords(data_dir, metadata_num_classes=4)
  logdir = tmp_path_factory.mktemp("training")
  config = TrainingConfig(
    logdir=str(logdir),
    train_file_pattern=f"{data_dir}/train-*",
    validation_file_pattern=f"{data_dir}/validation-*",
    batch_size=8,
    image_size=64,
    block_counts=mf.TINY_BLOCK_COUNTS,
    width_factor=mf.TINY_WIDTH_FACTOR,
    local_feature_map_channels=mf.TINY_LOCAL_CHANNELS,
    autoencoder_dimensions=16,
    max_iters=4,
    report_interval=2,
  )
  train(config)
  pictures = {}
  for path in glob.glob(str(logdir / "train_logs" / "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == summaries.ATTENTION_OVERLAY_TAG:
          pictures[event.step] = value
  assert sorted(pictures) == [2, 4]
  value = pictures[4]
  assert value.metadata.summary_description == summaries.ATTENTION_OVERLAY_DESCRIPTION
  width, height, *encoded = tf.make_ndarray(value.tensor)
  assert (int(width), int(height), len(encoded)) == (64, 64, 3)
  for png in encoded:
    picture = tf.io.decode_png(png).numpy()
    assert picture.shape == (64, 64, 3) and picture.std() > 5
