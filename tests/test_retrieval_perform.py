"""perform_retrieval on a constructed benchmark with hand-computed metrics (§5.2; KB-39/41/52).

Index ids: 0, 1 easy and 2 hard for landmark A, 3 junk for A; 4 easy and 5 hard for
landmark B; 6..9 distractors. Queries: qa (A), qb (B). Global descriptors put
distractors above the positives; local features make the positives verifiable, so
geometric verification must lift every positive to the top.
"""

from __future__ import annotations

import numpy as np
import pytest
from absl import flags

from delf import datum_io, feature_io
from delf.retrieval import demo_benchmark, metrics_file, retrieval
from tests import cli_harness

_DIM = 64
_SIM_A = [0.5, 0.3, 0.2, 0.6, 0.1, 0.05, 0.7, 0.4, 0.35, 0.0]
_SIM_B = [0.05, 0.04, 0.03, 0.02, 0.3, 0.45, 0.6, 0.5, 0.01, 0.2]


def run_script(name, args):
  # cli_harness._unregister_script_flags deletes from the list it iterates over and
  # leaves every second flag registered; remove them all before loading a script.
  for module_name, module_flags in list(flags.FLAGS.flags_by_module_dict().items()):
    if module_name.startswith("scripts."):
      for flag in list(module_flags):
        if flag.name in flags.FLAGS:
          delattr(flags.FLAGS, flag.name)
  return cli_harness.run_script(name, args)


def _scene(rng, n):
  descriptors = rng.normal(size=(n, _DIM))
  return rng.uniform(0, 300, (n, 2)), descriptors / np.linalg.norm(descriptors, axis=1)[:, None]


def _view(rng, scene, count):
  locations, descriptors = scene
  matrix = np.array([[1.1, 0.15], [-0.1, 0.9]])
  noisy = descriptors[:count] + rng.normal(scale=0.01, size=(count, _DIM))
  return locations[:count] @ matrix.T + 7.0, noisy / np.linalg.norm(noisy, axis=1)[:, None]


def _write_local(path, features):
  locations, descriptors = features
  n = len(locations)
  feature_io.WriteToFile(str(path), locations, np.ones(n), descriptors, np.ones(n))


@pytest.fixture
def case(tmp_path):
  rng = np.random.default_rng(0)
  query_dir, index_dir = tmp_path / "query", tmp_path / "index"
  query_dir.mkdir()
  index_dir.mkdir()
  index_names = [f"im{j}" for j in range(10)]
  for j, name in enumerate(index_names):
    descriptor = np.zeros(12, np.float32)
    descriptor[0], descriptor[1] = _SIM_A[j], _SIM_B[j]
    descriptor[2 + j] = np.sqrt(1 - _SIM_A[j] ** 2 - _SIM_B[j] ** 2)
    datum_io.WriteToFile(descriptor, str(index_dir / f"{name}.delg_global"))
  for k, name in enumerate(["qa", "qb"]):
    datum_io.WriteToFile(np.eye(12, dtype=np.float32)[k], str(query_dir / f"{name}.delg_global"))
  scene_a, scene_b = _scene(rng, 60), _scene(rng, 60)
  _write_local(query_dir / "qa.delg_local", _view(rng, scene_a, 60))
  _write_local(query_dir / "qb.delg_local", _view(rng, scene_b, 60))
  views = {0: (scene_a, 50), 1: (scene_a, 40), 2: (scene_a, 30), 3: (scene_a, 10)}
  views |= {4: (scene_b, 50), 5: (scene_b, 30)}
  for j, name in enumerate(index_names):
    scene, count = views.get(j, (_scene(rng, 40), 40))
    _write_local(index_dir / f"{name}.delg_local", _view(rng, scene, count))
  ground_truth = [
    {"easy": np.array([0, 1]), "hard": np.array([2]), "junk": np.array([3])},
    {"easy": np.array([4]), "hard": np.array([5]), "junk": np.array([], int)},
  ]
  for entry in ground_truth:
    entry["bbx"] = np.array([0.0, 0.0, 10.0, 10.0])
  gnd_path = str(tmp_path / "gnd_case.mat")
  demo_benchmark.SaveGroundTruthMat(gnd_path, ["qa", "qb"], index_names, ground_truth)
  return tmp_path, gnd_path


def _args(root, gnd_path, *extra):
  return [
    f"--dataset_file_path={gnd_path}",
    f"--query_features_dir={root / 'query'}",
    f"--index_features_dir={root / 'index'}",
    f"--output_dir={root / 'out'}",
    *extra,
  ]


def test_without_verification(case, capsys):
  root, gnd_path = case
  run_script("perform_retrieval", _args(root, gnd_path))
  out = capsys.readouterr().out
  assert "done! Found 2 queries and 10 index images" in out
  assert "Starting to re-rank" not in out
  mean_ap, ranks, precisions, recalls = metrics_file.ReadMetricsFile(str(root / "out/metrics.txt"))
  assert ranks == [1, 5, 10]
  assert sorted(mean_ap) == ["hard", "medium"]
  # Hand-computed. medium: qa positives at adjusted ranks [1, 4, 5] -> AP 0.341667,
  # qb at [2, 3] -> AP 0.291667; hard: qa [3] -> 0.125, qb [2] -> 0.166667.
  assert mean_ap == pytest.approx({"medium": 0.3167, "hard": 0.1458}, abs=1e-12)
  np.testing.assert_allclose(precisions["medium"], [0.0, 0.45, 0.5], rtol=0, atol=1e-12)
  np.testing.assert_allclose(recalls["medium"], [0.0, 0.8333, 1.0], rtol=0, atol=1e-12)


def test_with_verification(case, capsys):
  root, gnd_path = case
  run_script("perform_retrieval", _args(root, gnd_path, "--use_geometric_verification"))
  out = capsys.readouterr().out
  assert "Starting to re-rank" in out
  assert "Re-ranking: i = 10 out of 10" in out  # 10 distinct index images verified.
  text = (root / "out/metrics.txt").read_text()
  assert text.startswith("hard\n  mAP=14.58\n")
  mean_ap, _, precisions, _ = metrics_file.ReadMetricsFile(str(root / "out/metrics.txt"))
  assert list(mean_ap) == ["hard", "hard_after_gv", "medium", "medium_after_gv"]
  assert mean_ap["medium_after_gv"] == mean_ap["hard_after_gv"] == 1.0
  # Verification is informative here: it must not lower any metric.
  assert mean_ap["medium_after_gv"] >= mean_ap["medium"]
  assert mean_ap["hard_after_gv"] >= mean_ap["hard"]
  np.testing.assert_array_equal(precisions["medium_after_gv"], [1.0, 1.0, 1.0])
  assert mean_ap["medium"] == pytest.approx(0.3167, abs=1e-12)  # The global blocks are unchanged.


def test_library_rankings_and_bad_files(case, capsys):
  root, gnd_path = case
  (root / "index/im6.delg_global").unlink()  # Missing (KB-39).
  datum_io.WriteToFile(np.zeros([0], np.float32), str(root / "index/im7.delg_global"))  # Empty.
  (root / "index/im2.delg_local").unlink()  # Missing local features (KB-41).
  config = retrieval.RetrievalConfig(
    dataset_file_path=gnd_path,
    query_features_dir=str(root / "query"),
    index_features_dir=str(root / "index"),
    use_geometric_verification=True,
    output_dir=str(root / "out"),
    allow_missing_features=True,
  )
  result = retrieval.perform_retrieval(config)
  out = capsys.readouterr().out
  assert "WARNING: 2 global descriptor file(s) missing or malformed" in out
  assert "im6.delg_global: file not found" in out
  assert "im7.delg_global: shape [0] is not a non-empty vector" in out
  assert "WARNING: 1 local-feature file(s) missing or unreadable" in out
  assert list(result.unreadable_local_features) == [str(root / "index/im2.delg_local")]
  # Zero vectors rank last; exact ties (im6, im7, im9 all 0) keep ascending ids (KB-52).
  np.testing.assert_array_equal(result.ranks_before_gv[0], [3, 0, 8, 1, 2, 4, 5, 6, 7, 9])
  # Medium after GV for qa: 0 and 1 verified; 2 lost its local features -> kept by score.
  np.testing.assert_array_equal(result.ranks_after_gv["medium"][0], [0, 1, 3, 8, 2, 4, 5, 6, 7, 9])
  # The metrics file says why the numbers may be low; our reader still reads it.
  text = (root / "out" / "metrics.txt").read_text().splitlines()
  assert text[-2:] == [
    "# 2 of 12 global descriptor files were missing or malformed and replaced by zero vectors "
    "(--allow_missing_features)",
    "# 1 local-feature files were missing or unreadable and counted as 0 inliers "
    "(--allow_missing_features)",
  ]
  assert set(metrics_file.ReadMetricsFile(str(root / "out" / "metrics.txt"))[0]) == {
    "medium",
    "hard",
    "medium_after_gv",
    "hard_after_gv",
  }


def test_missing_features_are_an_error_by_default(case, capsys):
  """Issue 8 (9): no metrics from zero vectors unless asked for."""
  root, gnd_path = case
  (root / "index/im6.delg_global").unlink()
  with pytest.raises(SystemExit) as raised:
    run_script("perform_retrieval", _args(root, gnd_path))
  message = str(raised.value.code)
  assert "\n" not in message
  assert "1 global descriptor file(s) missing or malformed" in message
  assert "im6.delg_global (file not found)" in message and "--allow_missing_features" in message
  assert not (root / "out" / "metrics.txt").exists()
  # Local features: checked before the (long) re-ranking starts.
  datum_io.WriteToFile(np.eye(12, dtype=np.float32)[11], str(root / "index/im6.delg_global"))
  (root / "index/im2.delg_local").unlink()
  with pytest.raises(SystemExit, match=r"1 local-feature file\(s\) missing.*im2\.delg_local"):
    run_script("perform_retrieval", _args(root, gnd_path, "--use_geometric_verification"))
  assert not (root / "out" / "metrics.txt").exists()
  # A corrupt one is only found while verifying: still an error, still no metrics.
  (root / "index/im2.delg_local").write_bytes(b"\xff not a protobuf")
  with pytest.raises(SystemExit, match=r"local-feature file\(s\) missing or malformed.*im2"):
    run_script("perform_retrieval", _args(root, gnd_path, "--use_geometric_verification"))
  assert not (root / "out" / "metrics.txt").exists()
  assert (
    run_script(
      "perform_retrieval",
      _args(root, gnd_path, "--use_geometric_verification", "--allow_missing_features"),
    )
    is None
  )
  assert "# 1 local-feature files" in (root / "out" / "metrics.txt").read_text()


def test_same_result_with_threads(case):
  root, gnd_path = case
  results = [
    retrieval.perform_retrieval(
      retrieval.RetrievalConfig(
        dataset_file_path=gnd_path,
        query_features_dir=str(root / "query"),
        index_features_dir=str(root / "index"),
        use_geometric_verification=True,
        output_dir=str(root / f"out{workers}"),
        num_workers=workers,
      )
    )
    for workers in (1, 3)
  ]
  for name in ("medium", "hard"):
    np.testing.assert_array_equal(results[0].ranks_after_gv[name], results[1].ranks_after_gv[name])
  assert (root / "out1/metrics.txt").read_bytes() == (root / "out3/metrics.txt").read_bytes()


def test_script_interface(case):
  root, _ = case
  with pytest.raises(RuntimeError, match=r"Too many command-line arguments\."):
    run_script("perform_retrieval", ["extra"])
  with pytest.raises(SystemExit, match=r"perform_retrieval: .*missing\.mat: ground-truth file"):
    run_script("perform_retrieval", _args(root, str(root / "missing.mat")))
  defaults = {
    "dataset_file_path": "/tmp/gnd_roxford5k.mat",
    "query_features_dir": "/tmp/features/query",
    "index_features_dir": "/tmp/features/index",
    "use_geometric_verification": False,
    "local_descriptor_matching_threshold": 1.0,
    "ransac_residual_threshold": 20.0,
    "use_ratio_test": False,
    "output_dir": "/tmp/retrieval",
  }
  for name, default in defaults.items():
    assert flags.FLAGS[name].default == default, name


def test_descriptors_of_another_model_are_an_error(case):
  root, gnd_path = case
  for j in range(10):
    datum_io.WriteToFile(np.ones(7, np.float32), str(root / f"index/im{j}.delg_global"))
  config = retrieval.RetrievalConfig(
    dataset_file_path=gnd_path,
    query_features_dir=str(root / "query"),
    index_features_dir=str(root / "index"),
    output_dir=str(root / "out"),
  )
  with pytest.raises(ValueError, match=r"No usable global descriptor in .*index.*dimension 7"):
    retrieval.perform_retrieval(config)
