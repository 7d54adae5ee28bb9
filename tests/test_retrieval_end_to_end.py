"""DELG retrieval end to end on the demo benchmark with a tiny random DELG model.

tiny checkpoint -> export_local_and_global_model -> make_demo_benchmark ->
extract_delg_features (query, index) -> perform_retrieval (with and without
geometric verification) -> metrics.txt. The model is untrained, so only the
artefacts and formats are asserted, not the retrieval quality.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from delf import datum_io, feature_io
from delf.retrieval import metrics_file, revisited
from tests import cli_harness, model_fixtures

AE_DIM = 16
EMBEDDING_DIM = 32


run_script = cli_harness.run_script

_CONFIG = """
use_local_features: true
use_global_features: true
model_path: "{model_path}"
is_tf2_exported: true
image_scales: 0.70710677
image_scales: 1.0
max_image_size: 160
delf_local_config {{
  use_pca: false
  max_feature_num: 60
  score_threshold: 0.0
}}
delf_global_config {{
  use_pca: false
  image_scales_ind: 0
  image_scales_ind: 1
}}
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
  tf = pytest.importorskip("tensorflow")
  root = tmp_path_factory.mktemp("delg_e2e")
  tf.keras.utils.set_random_seed(2)
  model_fixtures.write_tiny_logdir(
    root / "logdir",
    "Delg",
    num_classes=5,
    use_dim_reduction=True,
    reduced_dimension=AE_DIM,
    embedding_layer_dim=EMBEDDING_DIM,
  )
  export_path = root / "export"
  run_script(
    "export_local_and_global_model",
    [
      f"--ckpt_path={root / 'logdir' / 'delf_weights'}",
      f"--export_path={export_path}",
      f"--delg_embedding_layer_dim={EMBEDDING_DIM}",
      f"--autoencoder_dimensions={AE_DIM}",
      f"--local_feature_map_channels={model_fixtures.TINY_LOCAL_CHANNELS}",
    ],
  )
  config_path = root / "delg_tiny.pbtxt"
  config_path.write_text(_CONFIG.format(model_path=export_path))
  benchmark = root / "benchmark"
  run_script(
    "make_demo_benchmark",
    [
      f"--output_dir={benchmark}",
      "--num_landmarks=2",
      "--queries_per_landmark=1",
      "--num_distractors=2",
      "--image_height=96",
      "--image_width=128",
    ],
  )
  gnd_path = benchmark / "gnd_demo.mat"
  for image_set in ("query", "index"):
    run_script(
      "extract_delg_features",
      [
        f"--delf_config_path={config_path}",
        f"--dataset_file_path={gnd_path}",
        f"--images_dir={benchmark / 'images'}",
        f"--image_set={image_set}",
        f"--output_features_dir={root / 'features' / image_set}",
      ],
    )
  return root, gnd_path


def test_features_written(pipeline):
  root, gnd_path = pipeline
  query_list, index_list, ground_truth = revisited.ReadDatasetFile(str(gnd_path))
  for image_set, names in (("query", query_list), ("index", index_list)):
    for name in names:
      base = root / "features" / image_set / name
      descriptor = datum_io.ReadFromFile(str(base) + ".delg_global")
      assert descriptor.shape == (EMBEDDING_DIM,)
      np.testing.assert_allclose(np.linalg.norm(descriptor), 1.0, rtol=1e-5)
      locations, _, descriptors, _, _ = feature_io.ReadFromFile(str(base) + ".delg_local")
      assert descriptors.shape[1:] == (AE_DIM,)
      assert 0 < len(locations) <= 60
  # Query keypoints are in the cropped image's frame.
  for name, entry in zip(query_list, ground_truth, strict=True):
    x1, y1, x2, y2 = (round(v) for v in entry["bbx"])
    locations = feature_io.ReadFromFile(str(root / "features" / "query" / name) + ".delg_local")[0]
    assert locations[:, 0].max() < (y2 - y1) + 16 and locations[:, 1].max() < (x2 - x1) + 16


def test_perform_retrieval_with_and_without_verification(pipeline, capsys):
  root, gnd_path = pipeline
  common = [
    f"--dataset_file_path={gnd_path}",
    f"--query_features_dir={root / 'features' / 'query'}",
    f"--index_features_dir={root / 'features' / 'index'}",
  ]
  run_script("perform_retrieval", [*common, f"--output_dir={root / 'global'}"])
  run_script(
    "perform_retrieval",
    [*common, f"--output_dir={root / 'gv'}", "--use_geometric_verification"],
  )
  out = capsys.readouterr().out
  assert out.count("done! Found 2 queries and 12 index images") == 2
  assert "Starting to re-rank" in out
  global_only = metrics_file.ReadMetricsFile(os.path.join(root, "global", "metrics.txt"))
  with_gv = metrics_file.ReadMetricsFile(os.path.join(root, "gv", "metrics.txt"))
  assert sorted(global_only[0]) == ["hard", "medium"]
  assert sorted(with_gv[0]) == ["hard", "hard_after_gv", "medium", "medium_after_gv"]
  assert global_only[1] == with_gv[1] == [1, 5, 10]
  for key in ("hard", "medium"):
    assert with_gv[0][key] == global_only[0][key]
  for value in with_gv[0].values():
    assert 0.0 < value <= 1.0


def test_exact_index_ranks_the_demo_benchmark_as_numpy(pipeline, tmp_path):
  """Stores + exact faiss index: the same rankings and metrics.txt as the per-image path."""
  from delf import feature_conversion
  from delf.retrieval import index_jobs, retrieval

  root, gnd_path = pipeline
  with open(os.devnull, "w") as quiet:
    for image_set in ("query", "index"):
      feature_conversion.files_to_store(
        str(root / "features" / image_set), str(tmp_path / image_set), out=quiet
      )
    index_jobs.build_index(
      index_jobs.BuildConfig(str(tmp_path / "index"), str(tmp_path / "idx")), out=quiet
    )
    results = {}
    for name, index_path, features in (
      ("dense", "", root / "features"),
      ("index", str(tmp_path / "idx"), tmp_path),
    ):
      config = retrieval.RetrievalConfig(
        dataset_file_path=str(gnd_path),
        query_features_dir=str(features / "query"),
        index_features_dir=str(features / "index"),
        index_path=index_path,
        use_geometric_verification=True,
        num_workers=2,
        output_dir=str(tmp_path / name),
      )
      results[name] = retrieval.perform_retrieval(config, out=quiet)
  np.testing.assert_array_equal(results["dense"].ranks_before_gv, results["index"].ranks_before_gv)
  assert (tmp_path / "dense" / "metrics.txt").read_text() == (
    tmp_path / "index" / "metrics.txt"
  ).read_text()
