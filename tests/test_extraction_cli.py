"""extract_features.py end to end on a toy TF2 SavedModel (inference.md §4.1, KB-40/41/58)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from delf import feature_io
from tests import cli_harness

pytest.importorskip("tensorflow")

from tests.test_extraction_extractor import RAW_FEATURES, ToyLocal, save_tf2

run_script = cli_harness.run_script


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
  return save_tf2(ToyLocal(), str(tmp_path_factory.mktemp("cli_model") / "model"))


def _write_config(
  path, model_path, *, local=True, max_feature_num=1000, max_image_size=-1, threshold=0.5
):
  path.write_text(
    f"""
model_path: "{model_path}"
image_scales: 0.5
image_scales: 1.0
use_local_features: {str(local).lower()}
use_global_features: {str(not local).lower()}
is_tf2_exported: true
max_image_size: {max_image_size}
delf_local_config {{ use_pca: false max_feature_num: {max_feature_num} score_threshold: {threshold} }}
"""
  )
  return str(path)


def _images(tmp_path, sizes):
  paths = []
  for i, (height, width) in enumerate(sizes):
    path = tmp_path / "images" / f"img_{i}.jpg"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(np.full([height, width, 3], 40 * i, np.uint8)).save(path)
    paths.append(str(path))
  return paths


def test_extracts_reports_bad_images_and_skips_existing(tmp_path, model_path, capsys):
  good = _images(tmp_path, [(40, 30), (20, 64)])
  corrupt = tmp_path / "images" / "corrupt.jpg"
  corrupt.write_bytes(b"not a jpeg")
  missing = str(tmp_path / "images" / "missing.jpg")
  listing = tmp_path / "list.txt"
  listing.write_text("\n".join([good[0], str(corrupt), missing, good[1]]) + "  \n\n")
  config = _write_config(tmp_path / "c.pbtxt", model_path, max_image_size=32)
  out_dir = tmp_path / "features"
  flags = dict(config_path=config, list_images_path=str(listing), output_dir=str(out_dir))

  assert run_script("extract_features", **flags) == 1  # KB-41: non-zero, but all processed.
  captured = capsys.readouterr()
  errors = [line for line in captured.err.splitlines() if line.startswith("Error:")]
  assert len(errors) == 2
  assert "corrupt.jpg" in errors[0] and "missing.jpg" in errors[1]
  assert "2 images written" in captured.out and "2 failed" in captured.out
  assert sorted(p.name for p in out_dir.glob("*.delf")) == ["img_0.delf", "img_1.delf"]

  # 40x30 resized by max_image_size 32 -> 32x24 (factors 0.8, 0.8); the toy boxes give
  # centres (16, 12), (4, 6), (0, 0) in the resized image, mapped back by / 0.8.
  locations, scales, descriptors, attention, orientations = feature_io.ReadFromFile(
    str(out_dir / "img_0.delf")
  )
  np.testing.assert_allclose(locations, np.array([[16, 12], [4, 6], [0, 0]]) / 0.8, rtol=1e-6)
  np.testing.assert_allclose(scales, [2.0, 1.0, 2.0])
  np.testing.assert_allclose(attention, [3.5, 2.5, 1.5])
  np.testing.assert_allclose(
    descriptors, RAW_FEATURES / np.linalg.norm(RAW_FEATURES, axis=1, keepdims=True), rtol=1e-6
  )
  np.testing.assert_array_equal(orientations, np.zeros(3))

  # Second run: existing outputs are skipped with the reference's message.
  listing.write_text("\n".join(good) + "\n")
  assert run_script("extract_features", **flags) == 0
  out = capsys.readouterr().out.splitlines()
  assert f"Skipping {good[0]}" in out and f"Skipping {good[1]}" in out


def test_global_only_config_is_refused_in_one_line(tmp_path, capsys):
  config = _write_config(tmp_path / "global.pbtxt", "/nonexistent/model", local=False)
  listing = tmp_path / "list.txt"
  listing.write_text("a.jpg\n")
  code = run_script(
    "extract_features",
    config_path=config,
    list_images_path=str(listing),
    output_dir=str(tmp_path / "o"),
  )
  assert code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1
  assert "global.pbtxt" in err[0] and "scripts/extract_delg_features.py" in err[0]


def test_shards_and_zero_feature_warning(tmp_path, model_path, capsys):
  paths = _images(tmp_path, [(16, 16)] * 5)
  listing = tmp_path / "list.txt"
  listing.write_text("\n".join(paths) + "\n")
  config = _write_config(tmp_path / "c.pbtxt", model_path, threshold=1e6)
  out_dir = tmp_path / "features"
  code = run_script(
    "extract_features",
    config_path=config,
    list_images_path=str(listing),
    output_dir=str(out_dir),
    num_shards=2,
    shard_index=1,
  )
  assert code == 0
  assert sorted(p.name for p in out_dir.glob("*.delf")) == ["img_1.delf", "img_3.delf"]
  assert (out_dir / "img_1.delf").stat().st_size == 0  # Zero features: zero-byte file.
  err = capsys.readouterr().err
  assert err.count("Warning: no local features for") == 2
  assert "raw attention scale" in err and "rerun with --noskip_existing" in err
  # The toy model's scores are threshold + 3, 2, 1: probed with threshold 0 -> 3.
  assert err.count("highest attention score in this image: 3)") == 2


def test_bad_inputs_are_one_line(tmp_path, capsys):
  code = run_script(
    "extract_features",
    config_path=str(tmp_path / "nope.pbtxt"),
    list_images_path=str(tmp_path / "l.txt"),
    output_dir=str(tmp_path / "o"),
  )
  assert code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "nope.pbtxt" in err[0]


def test_flag_defaults():
  cli_harness.load_script("extract_features")
  flags = cli_harness.FLAGS
  assert flags["config_path"].default == "delf_config_example.pbtxt"
  assert flags["list_images_path"].default == "list_images.txt"
  assert flags["output_dir"].default == "test_features"
  assert flags["num_shards"].default == 1 and flags["shard_index"].default == 0
  assert flags["skip_existing"].default is True


def test_images_with_the_same_basename_do_not_overwrite_each_other(tmp_path, model_path, capsys):
  first = _images(tmp_path, [(40, 30)])[0]
  other_folder = tmp_path / "other"
  other_folder.mkdir()
  second = str(other_folder / "img_0.jpg")  # Same basename, other content.
  Image.fromarray(np.full([20, 64, 3], 200, np.uint8)).save(second)
  listing = tmp_path / "list.txt"
  listing.write_text(f"{first}\n{second}\n")
  config = _write_config(tmp_path / "c.pbtxt", model_path, max_image_size=32)
  out_dir = tmp_path / "features"
  flags = dict(config_path=config, list_images_path=str(listing), output_dir=str(out_dir))

  assert run_script("extract_features", **flags) == 1
  captured = capsys.readouterr()
  errors = [line for line in captured.err.splitlines() if line.startswith("Error:")]
  assert len(errors) == 1 and second in errors[0] and first in errors[0]
  assert "1 images written" in captured.out and "1 failed" in captured.out
  # The output is the first image's (40x30 -> 32x24, factor 0.8), not the second's.
  locations, *_ = feature_io.ReadFromFile(str(out_dir / "img_0.delf"))
  np.testing.assert_allclose(locations[0], np.array([16, 12]) / 0.8, rtol=1e-6)

  # Every shard process sees the same collision: shard 1 (the second image) reports it.
  assert run_script("extract_features", num_shards=2, shard_index=1, **flags) == 1
  assert second in capsys.readouterr().err


def test_changed_config_is_not_skipped_silently(tmp_path, model_path, capsys):
  """Issue 8 (8): empty files from a too-high threshold are not kept by the rerun."""
  paths = _images(tmp_path, [(16, 16)] * 3)
  listing = tmp_path / "list.txt"
  listing.write_text("\n".join(paths) + "\n")
  out_dir = tmp_path / "features"
  high = _write_config(tmp_path / "high.pbtxt", model_path, threshold=1e6)
  flags = dict(list_images_path=str(listing), output_dir=str(out_dir))
  assert run_script("extract_features", config_path=high, **flags) == 0
  assert all((out_dir / f"img_{i}.delf").stat().st_size == 0 for i in range(3))
  record = (out_dir / "extraction_config.json").read_text()
  assert "score_threshold: 1000000" in record
  capsys.readouterr()
  # The user lowers the threshold and reruns: refused, naming the field and the option.
  low = _write_config(tmp_path / "low.pbtxt", model_path, threshold=0.5)
  assert run_script("extract_features", config_path=low, **flags) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1
  assert "score_threshold: 1000000.0 -> 0.5" in err[0] and "--noskip_existing" in err[0]
  assert all((out_dir / f"img_{i}.delf").stat().st_size == 0 for i in range(3))  # untouched
  # --noskip_existing re-extracts everything and records the new config.
  assert run_script("extract_features", config_path=low, skip_existing=False, **flags) == 0
  assert all((out_dir / f"img_{i}.delf").stat().st_size > 0 for i in range(3))
  assert run_script("extract_features", config_path=low, **flags) == 0
  assert "0 images (3 already done)" in capsys.readouterr().out


def test_interrupted_re_extraction_finishes_the_old_files(tmp_path, model_path, capsys):
  import json
  import os

  from delf.extraction import config_io, output_config

  paths = _images(tmp_path, [(16, 16)] * 3)
  listing = tmp_path / "list.txt"
  listing.write_text("\n".join(paths) + "\n")
  out_dir = tmp_path / "features"
  low = _write_config(tmp_path / "low.pbtxt", model_path, threshold=0.5)
  flags = dict(config_path=low, list_images_path=str(listing), output_dir=str(out_dir))
  assert run_script("extract_features", **flags) == 0
  # State left by a --noskip_existing run with this config that was killed after one
  # image: the record says "replacing"; img_0 is new, img_1 and img_2 are older.
  record = output_config.record_for(config_io.read_delf_config(low))
  for i, age in ((1, 100), (2, 100)):
    path = out_dir / f"img_{i}.delf"
    os.utime(path, (path.stat().st_mtime - age, path.stat().st_mtime - age))
  output_config.write_record(
    str(out_dir), record.__class__(**{**record.__dict__, "replacing": True})
  )
  later = (out_dir / "extraction_config.json").stat().st_mtime + 1
  os.utime(out_dir / "img_0.delf", (later, later))
  capsys.readouterr()
  assert run_script("extract_features", **flags) == 0
  out = capsys.readouterr().out
  assert "Extracting features for 2 images (1 already done)" in out
  assert json.loads((out_dir / "extraction_config.json").read_text())["replacing"] is False


def test_max_feature_num_not_positive_and_output_file_are_refused(tmp_path, model_path, capsys):
  paths = _images(tmp_path, [(16, 16)])
  listing = tmp_path / "list.txt"
  listing.write_text(paths[0] + "\n")
  zero = _write_config(tmp_path / "zero.pbtxt", model_path, max_feature_num=0)
  assert (
    run_script(
      "extract_features",
      config_path=zero,
      list_images_path=str(listing),
      output_dir=str(tmp_path / "f"),
    )
    == 1
  )
  assert "max_feature_num must be > 0, got 0" in capsys.readouterr().err
  assert not (tmp_path / "f").exists()
  target = tmp_path / "a_file"
  target.write_text("x")
  ok = _write_config(tmp_path / "ok.pbtxt", model_path)
  assert (
    run_script(
      "extract_features", config_path=ok, list_images_path=str(listing), output_dir=str(target)
    )
    == 1
  )
  assert f"--output_dir={target} is a file" in capsys.readouterr().err


def test_truncated_jpeg_is_extracted_but_reported(tmp_path, model_path, capsys):
  import io

  buffer = io.BytesIO()
  rng = np.random.default_rng(0)
  Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(buffer, "JPEG")
  data = buffer.getvalue()
  path = tmp_path / "cut.jpg"
  path.write_bytes(data[: len(data) * 2 // 3])
  listing = tmp_path / "list.txt"
  listing.write_text(f"{path}\n")
  config = _write_config(tmp_path / "c.pbtxt", model_path)
  out_dir = tmp_path / "features"
  code = run_script(
    "extract_features", config_path=config, list_images_path=str(listing), output_dir=str(out_dir)
  )
  assert code == 0  # KB-46 kept: it is extracted...
  assert (out_dir / "cut.delf").stat().st_size > 0
  assert f"Warning: {path}: truncated JPEG" in capsys.readouterr().err  # ...and reported
