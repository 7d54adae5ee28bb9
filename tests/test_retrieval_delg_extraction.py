"""DELG extraction over a ground-truth file: query cropping, outputs, skips, bad images.

A stand-in extractor records what it receives, so no model is needed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from absl import flags
from PIL import Image

from delf import datum_io, delf_config_pb2, feature_io
from delf.retrieval import delg_extraction, demo_benchmark
from tests import cli_harness


def _unregister_script_flags():
  # cli_harness._unregister_script_flags deletes from the list it iterates over and
  # leaves every second flag registered; remove them all before loading a script.
  for module_name, module_flags in list(flags.FLAGS.flags_by_module_dict().items()):
    if module_name.startswith("scripts."):
      for flag in list(module_flags):
        if flag.name in flags.FLAGS:
          delattr(flags.FLAGS, flag.name)


def run_script(name, args):
  _unregister_script_flags()
  return cli_harness.run_script(name, args)


# Full query image 40 x 30 (W x H); boxes with .5 values check half-to-even rounding.
_W, _H = 40, 30
_QUERIES = ["q0", "q1"]
_INDEX = ["i0", "i1"]
_BOXES = [
  [2.5, 3.5, 20.5, 11.5],  # -> (2, 4, 20, 12): crop 18 x 8, factor 18 / 40.
  [0.4, 1.6, 30.49, 29.51],  # -> (0, 2, 30, 30): crop 30 x 28, factor 30 / 40.
]
_EXPECTED_CROPS = [(2, 4, 20, 12), (0, 2, 30, 30)]


class _StandInExtractor:
  """Returns features derived from the image so that outputs can be checked."""

  def __init__(self):
    self.calls = []

  def __call__(self, image: np.ndarray, resize_factor: float) -> dict:
    self.calls.append((image.copy(), resize_factor))
    n = 3
    return {
      "global_descriptor": np.array([image.shape[0], image.shape[1], resize_factor], np.float32),
      "local_features": {
        "locations": np.arange(2 * n, dtype=np.float32).reshape(n, 2),
        "descriptors": np.full([n, 4], image.mean(), dtype=np.float32),
        "scales": np.ones([n], np.float32),
        "attention": np.arange(n, dtype=np.float32),
      },
    }


def _image(seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, size=(_H, _W, 3), dtype=np.uint8)


@pytest.fixture
def benchmark(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  for k, name in enumerate(_QUERIES + _INDEX):
    Image.fromarray(_image(k)).save(images / f"{name}.png", format="PNG")
    (images / f"{name}.png").rename(images / f"{name}.jpg")  # Lossless pixels, .jpg name.
  ground_truth = [
    {"easy": np.array([0]), "hard": np.array([]), "junk": np.array([1]), "bbx": np.array(b)}
    for b in _BOXES
  ]
  gnd_path = tmp_path / "gnd_test.mat"
  demo_benchmark.SaveGroundTruthMat(str(gnd_path), _QUERIES, _INDEX, ground_truth)
  return tmp_path, str(gnd_path)


def _delf_config(use_global=True, use_local=True):
  config = delf_config_pb2.DelfConfig()
  config.use_global_features = use_global
  config.use_local_features = use_local
  return config


def _config(root, gnd_path, image_set):
  return delg_extraction.DelgExtractionConfig(
    delf_config_path="unused",
    dataset_file_path=gnd_path,
    images_dir=str(root / "images"),
    image_set=image_set,
    output_features_dir=str(root / "features" / image_set),
  )


def test_crop_query_rounds_half_to_even():
  image = Image.fromarray(_image(0))
  for box, expected in zip(_BOXES, _EXPECTED_CROPS, strict=True):
    crop, factor = delg_extraction.CropQuery(image, box)
    width, height = expected[2] - expected[0], expected[3] - expected[1]
    assert crop.size == (width, height)
    assert factor == max(width, height) / max(_W, _H)
    np.testing.assert_array_equal(
      np.asarray(crop), _image(0)[expected[1] : expected[3], expected[0] : expected[2]]
    )


def test_query_extraction_crops_and_writes(benchmark):
  root, gnd_path = benchmark
  extractor = _StandInExtractor()
  summary = delg_extraction.extract_delg_features(
    _config(root, gnd_path, "query"), delf_config=_delf_config(), extractor_fn=extractor
  )
  assert (summary.num_extracted, summary.num_skipped, summary.failed) == (2, 0, {})
  for k, ((image, factor), crop) in enumerate(zip(extractor.calls, _EXPECTED_CROPS, strict=True)):
    x1, y1, x2, y2 = crop
    np.testing.assert_array_equal(image, _image(k)[y1:y2, x1:x2])
    assert factor == max(x2 - x1, y2 - y1) / max(_W, _H)
    out = root / "features" / "query"
    descriptor = datum_io.ReadFromFile(str(out / f"{_QUERIES[k]}.delg_global"))
    np.testing.assert_allclose(descriptor, [y2 - y1, x2 - x1, factor], rtol=1e-6)
    locations, scales, descriptors, attention, _ = feature_io.ReadFromFile(
      str(out / f"{_QUERIES[k]}.delg_local")
    )
    np.testing.assert_array_equal(locations, np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(attention, [0, 1, 2])
    np.testing.assert_array_equal(scales, [1, 1, 1])
    assert descriptors.shape == (3, 4)


def test_index_extraction_uses_full_images_and_skips_existing(benchmark, capsys):
  root, gnd_path = benchmark
  extractor = _StandInExtractor()
  config = _config(root, gnd_path, "index")
  delg_extraction.extract_delg_features(config, delf_config=_delf_config(), extractor_fn=extractor)
  assert [factor for _, factor in extractor.calls] == [1.0, 1.0]
  np.testing.assert_array_equal(extractor.calls[0][0], _image(2))
  assert "done! Found 2 images" in capsys.readouterr().out
  # Second run: every requested output exists -> nothing extracted.
  summary = delg_extraction.extract_delg_features(
    config, delf_config=_delf_config(), extractor_fn=extractor
  )
  assert (summary.num_extracted, summary.num_skipped) == (0, 2)
  assert len(extractor.calls) == 2
  # Local features newly requested, but only global ones exist for i1 -> i1 is redone.
  (root / "features" / "index" / "i1.delg_local").unlink()
  summary = delg_extraction.extract_delg_features(
    config, delf_config=_delf_config(), extractor_fn=extractor
  )
  assert (summary.num_extracted, summary.num_skipped) == (1, 1)


def test_global_only_config_writes_no_local_files(benchmark):
  root, gnd_path = benchmark
  delg_extraction.extract_delg_features(
    _config(root, gnd_path, "index"),
    delf_config=_delf_config(use_local=False),
    extractor_fn=_StandInExtractor(),
  )
  names = sorted(p.name for p in (root / "features" / "index").iterdir())
  assert names == ["extraction_config.json", "i0.delg_global", "i1.delg_global"]


def test_bad_image_is_reported_and_run_continues(benchmark, capsys):
  root, gnd_path = benchmark
  (root / "images" / "i0.jpg").write_bytes(b"garbage")
  summary = delg_extraction.extract_delg_features(
    _config(root, gnd_path, "index"), delf_config=_delf_config(), extractor_fn=_StandInExtractor()
  )
  assert summary.num_extracted == 1
  assert list(summary.failed) == [str(root / "images" / "i0.jpg")]
  assert f"ERROR: {root / 'images' / 'i0.jpg'}: cannot read image" in capsys.readouterr().out
  assert not (root / "features" / "index" / "i0.delg_global").exists()


def test_script_flags_and_errors(benchmark, tmp_path):
  root, gnd_path = benchmark
  with pytest.raises(RuntimeError, match=r"Too many command-line arguments\."):
    run_script("extract_delg_features", ["extra"])
  # Strict parsing: a singular field given twice is an error naming the file.
  config_path = tmp_path / "config.pbtxt"
  config_path.write_text("use_global_features: true\nuse_global_features: true\n")
  with pytest.raises(SystemExit, match=r"config\.pbtxt: invalid DelfConfig"):
    run_script(
      "extract_delg_features",
      [
        f"--delf_config_path={config_path}",
        f"--dataset_file_path={gnd_path}",
        f"--images_dir={root / 'images'}",
        "--image_set=index",
        f"--output_features_dir={tmp_path / 'out'}",
      ],
    )
  _unregister_script_flags()
  cli_harness.load_script("extract_delg_features")
  assert flags.FLAGS["image_set"].default == "query"
  assert flags.FLAGS["delf_config_path"].default == "/tmp/delf_config_example.pbtxt"
  assert flags.FLAGS["dataset_file_path"].default == "/tmp/gnd_roxford5k.mat"
  assert flags.FLAGS["images_dir"].default == "/tmp/images"
  assert flags.FLAGS["output_features_dir"].default == "/tmp/features"


def test_output_dir_that_is_a_file_is_one_line(benchmark):
  """Issue 8 (11): no raw FileExistsError."""
  root, gnd_path = benchmark
  config = _config(root, gnd_path, "index")
  (root / "features").mkdir()
  target = root / "features" / "index"
  target.write_text("a file")
  with pytest.raises(
    ValueError, match=r"^--output_features_dir=.*index is a file, not a directory$"
  ):
    delg_extraction.extract_delg_features(
      config, delf_config=_delf_config(), extractor_fn=_StandInExtractor()
    )
  assert target.read_text() == "a file"


def test_changed_config_is_refused_then_redone_with_noskip(benchmark):
  """Issue 8 (8), DELG side: another config's features are not kept by skip-existing."""
  root, gnd_path = benchmark
  config = _config(root, gnd_path, "index")
  extractor = _StandInExtractor()
  delg_extraction.extract_delg_features(config, delf_config=_delf_config(), extractor_fn=extractor)
  other = _delf_config()
  other.max_image_size = 512
  with pytest.raises(
    ValueError, match=r"another config .*max_image_size: 512 \(added\).*--noskip_existing"
  ):
    delg_extraction.extract_delg_features(config, delf_config=other, extractor_fn=extractor)
  assert len(extractor.calls) == 2
  summary = delg_extraction.extract_delg_features(
    dataclasses.replace(config, skip_existing=False), delf_config=other, extractor_fn=extractor
  )
  assert (summary.num_extracted, summary.num_skipped) == (2, 0)
  summary = delg_extraction.extract_delg_features(config, delf_config=other, extractor_fn=extractor)
  assert (summary.num_extracted, summary.num_skipped) == (0, 2)
