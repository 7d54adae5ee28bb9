"""calibrate_attention.py: a model's attention-score distribution (KB-58)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from delf.extraction import attention_calibration as calibration
from tests.cli_harness import run_script

pytest.importorskip("tensorflow")

from tests.test_extraction_extractor import ToyLocal, save_tf2


def test_threshold_keeping_counts_cells_at_or_above():
  scores = np.float32([9.0, 7.0, 7.0, 3.0, 1.0])
  for budget, kept in [(1, 1), (2, 1), (3, 3), (4, 4), (5, 5), (100, 5)]:
    threshold = calibration.threshold_keeping(scores, budget)
    assert np.count_nonzero(scores >= threshold) == kept, budget


def test_summary_statistics():
  report = calibration.summarize(
    [np.arange(1, 101, dtype=np.float32), np.arange(1, 11, dtype=np.float32)],
    current_threshold=50.0,
    max_feature_num=20,
  )
  assert report.percentiles[0] == 1 and report.percentiles[100] == 100
  # Image 1 keeps its top 20 (81..100) with 80.5, image 2 keeps all with 0: median 40.25.
  assert report.threshold_for_budget[20] == 40.25
  assert report.threshold_for_budget[100] == 0.0  # 100 cells: all kept by 0.
  # Threshold 50 keeps 51 cells of image 1 (capped at max_feature_num 20) and none of image 2.
  assert report.mean_kept_at_current == 10.0


def test_script_on_a_model(tmp_path, capsys):
  model = save_tf2(ToyLocal(), str(tmp_path / "model"))  # Scores 3, 2, 1 for any image.
  config = tmp_path / "config.pbtxt"
  config.write_text(
    f'model_path: "{model}"\nimage_scales: 1.0\nis_tf2_exported: true\n'
    "delf_local_config { use_pca: false max_feature_num: 2 score_threshold: 1.5 }\n"
  )
  images = []
  for i in range(2):
    path = tmp_path / f"image_{i}.jpg"
    Image.fromarray(np.full([32, 48, 3], 60 * i, np.uint8)).save(path)
    images.append(str(path))
  listing = tmp_path / "list.txt"
  listing.write_text("\n".join([*images, str(tmp_path / "missing.jpg")]) + "\n")
  assert (
    run_script("calibrate_attention", [f"--config_path={config}", f"--list_images_path={listing}"])
    == 0
  )
  captured = capsys.readouterr()
  assert "missing.jpg" in captured.err
  lines = captured.out.splitlines()
  assert lines[0] == "Attention scores of 2 images (6 feature-map cells over all pyramid scales):"
  # Linear interpolation over the six scores 1, 1, 2, 2, 3, 3.
  assert lines[1] == "  p0=1  p5=1  p25=1.25  p50=2  p75=2.75  p95=3  p100=3"
  assert "  N=2: 1.5" in lines  # Halfway between the second and third scores.
  assert lines[-1].endswith("keeps 2.0 features per image on average.")


def test_global_only_config_is_refused(tmp_path):
  config = tmp_path / "config.pbtxt"
  config.write_text('model_path: "m"\nuse_local_features: false\nuse_global_features: true\n')
  with pytest.raises(SystemExit, match="use_local_features is false"):
    run_script("calibrate_attention", [f"--config_path={config}"])
