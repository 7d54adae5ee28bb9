"""Text-format DelfConfig reading and every shipped config under configs/."""

from __future__ import annotations

import pathlib

import pytest

from delf.extraction import config_io

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"

DELG_CONFIGS = {
  "delg_gld_config.pbtxt": ("parameters/delg_gld_20200520", 175.0),
  "r50delg_gld_config.pbtxt": ("parameters/r50delg_gld_20200814", 175.0),
  "r101delg_gld_config.pbtxt": ("parameters/r101delg_gld_20200814", 166.1),
  "r50delg_gldv2clean_config.pbtxt": ("parameters/r50delg_gldv2clean_20200914", 454.6),
  "r101delg_gldv2clean_config.pbtxt": ("parameters/r101delg_gldv2clean_20200914", 357.48),
}
DELG_SCALES = [0.25, 0.35355338, 0.5, 0.70710677, 1.0, 1.4142135, 2.0]


def test_merge_semantics_by_default_and_strict_option(tmp_path):
  path = tmp_path / "c.pbtxt"
  path.write_text('model_path: "a"\nmodel_path: "b"\nimage_scales: 1.0\n')
  assert config_io.read_delf_config(path).model_path == "b"
  with pytest.raises(ValueError, match=r"c\.pbtxt.*model_path"):
    config_io.read_delf_config(path, strict=True)


def test_defaults_of_unset_fields(tmp_path):
  path = tmp_path / "c.pbtxt"
  path.write_text('model_path: "m"\n')
  config = config_io.read_delf_config(str(path))
  assert config.use_local_features and not config.use_global_features
  assert config.max_image_size == -1 and config.min_image_size == -1
  assert config.delf_local_config.use_pca  # Default true.
  assert config.delf_local_config.score_threshold == 100.0
  assert config.delf_local_config.max_feature_num == 1000
  assert not config.is_tf2_exported


def test_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"missing\.pbtxt"):
    config_io.read_delf_config(tmp_path / "missing.pbtxt")
  bad = tmp_path / "bad.pbtxt"
  bad.write_text("model_path: 'x'\nnot_a_field: 3\n")
  with pytest.raises(ValueError, match=r"bad\.pbtxt.*2:1.*not_a_field"):
    config_io.read_delf_config(bad)


def test_delf_example_config():
  config = config_io.read_delf_config(CONFIG_DIR / "delf_config_example.pbtxt", strict=True)
  assert config.model_path == "parameters/delf_gld_20190411/model"
  assert list(config.image_scales) == pytest.approx([0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0])
  local = config.delf_local_config
  assert local.use_pca and local.layer_name == "resnet_v1_50/block3"
  assert local.iou_threshold == 1.0 and local.max_feature_num == 1000
  assert local.score_threshold == 100.0
  assert local.pca_parameters.mean_path == "parameters/delf_gld_20190411/pca/mean.datum"
  assert (
    local.pca_parameters.projection_matrix_path
    == "parameters/delf_gld_20190411/pca/pca_proj_mat.datum"
  )
  assert local.pca_parameters.pca_dim == 40 and not local.pca_parameters.use_whitening
  assert not config.HasField("max_image_size") and not config.is_tf2_exported


@pytest.mark.parametrize("name", sorted(DELG_CONFIGS))
def test_delg_configs(name):
  model_path, threshold = DELG_CONFIGS[name]
  config = config_io.read_delf_config(CONFIG_DIR / name, strict=True)
  assert config.model_path == model_path
  assert config.use_local_features and config.use_global_features
  assert list(config.image_scales) == pytest.approx(DELG_SCALES)
  assert not config.delf_local_config.use_pca
  assert config.delf_local_config.max_feature_num == 1000
  assert config.delf_local_config.score_threshold == pytest.approx(threshold)
  assert not config.delf_global_config.use_pca
  assert list(config.delf_global_config.image_scales_ind) == [3, 4, 5]
  assert config.max_image_size == 1024 and not config.is_tf2_exported


def test_gldv2_baseline_config():
  config = config_io.read_delf_config(CONFIG_DIR / "rn101_af_gldv2clean_config.pbtxt", strict=True)
  assert config.model_path == "parameters/rn101_af_gldv2clean_20200521"
  assert not config.use_local_features and config.use_global_features
  assert list(config.image_scales) == pytest.approx([0.70710677, 1.0, 1.4142135])
  assert not config.delf_global_config.use_pca
  assert list(config.delf_global_config.image_scales_ind) == []
  assert config.max_image_size == 1024


def test_tf2_example_config():
  config = config_io.read_delf_config(CONFIG_DIR / "delf_tf2_config_example.pbtxt", strict=True)
  assert config.is_tf2_exported and config.use_local_features
  assert not config.delf_local_config.use_pca
  assert list(config.image_scales) == pytest.approx(DELG_SCALES)


def test_every_shipped_config_parses_and_starts_with_a_usage_comment():
  names = sorted(p.name for p in CONFIG_DIR.glob("*.pbtxt"))
  assert set(DELG_CONFIGS) | {
    "delf_config_example.pbtxt",
    "rn101_af_gldv2clean_config.pbtxt",
    "delf_tf2_config_example.pbtxt",
  } <= set(names)
  for name in names:
    path = CONFIG_DIR / name
    config_io.read_delf_config(path, strict=True)
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), f"{name} must start with a comment giving the command"
    assert "python scripts/" in path.read_text().split("\n\n")[0], name


def test_light_extraction_modules_do_not_import_tensorflow():
  import subprocess
  import sys

  code = (
    "import sys; import delf.extraction.config_io, delf.extraction.resize, "
    "delf.extraction.image_io, delf.extraction.postprocess, delf.extraction.extract_features; "
    "print('tensorflow' in sys.modules)"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"
