"""Parallel and sharded re-ranking, and the GLDv2 Kaggle CSVs scored by the metric scripts."""

from __future__ import annotations

import os

import numpy as np
import pytest

from delf import datum_io, feature_conversion, feature_io
from delf.retrieval import index_jobs, rerank_parallel, reranking
from tests import cli_harness


@pytest.fixture
def quiet():
  with open(os.devnull, "w") as stream:
    yield stream


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _view(rng, scene, count, shift):
  locations, descriptors = scene
  noisy = _unit(descriptors[:count] + rng.normal(scale=0.01, size=(count, descriptors.shape[1])))
  return locations[:count] @ np.array([[1.1, 0.1], [-0.1, 0.9]]).T + shift, noisy


def _write(folder, name, global_descriptor, local):
  locations, descriptors = local
  n = len(locations)
  datum_io.WriteToFile(global_descriptor, str(folder / f"{name}.delg_global"))
  feature_io.WriteToFile(
    str(folder / f"{name}.delg_local"), locations, np.ones(n), descriptors, np.ones(n)
  )


@pytest.fixture(scope="module")
def gldv2(tmp_path_factory):
  """4 landmarks; index: 2 views each + 4 distractors; 6 test queries (one non-landmark)."""
  root = tmp_path_factory.mktemp("gldv2")
  rng = np.random.default_rng(0)
  dim = 16
  scenes = [(rng.uniform(0, 300, (50, 2)), _unit(rng.normal(size=(50, 24)))) for _ in range(4)]
  centers = _unit(rng.normal(size=(4, dim)))
  (root / "index").mkdir()
  (root / "test").mkdir()
  labels = {}
  for landmark in range(4):
    for view in range(2):
      name = f"idx{landmark}{view}"
      labels[name] = 100 + landmark
      descriptor = _unit(centers[landmark] + 0.6 * rng.normal(size=dim))
      _write(root / "index", name, descriptor, _view(rng, scenes[landmark], 40 - 10 * view, 5.0))
  for j in range(4):
    name = f"dis{j}"
    labels[name] = 200 + j
    _write(
      root / "index",
      name,
      _unit(rng.normal(size=dim)),
      (rng.uniform(0, 300, (40, 2)), _unit(rng.normal(size=(40, 24)))),
    )
  for q in range(6):
    landmark = q % 4
    local = (
      _view(rng, scenes[landmark], 45, -3.0)
      if q < 5
      else (rng.uniform(0, 300, (40, 2)), _unit(rng.normal(size=(40, 24))))
    )
    _write(root / "test", f"q{q}", _unit(centers[landmark] + 0.5 * rng.normal(size=dim)), local)
  with open(os.devnull, "w") as quiet:
    for split in ("index", "test"):
      feature_conversion.files_to_store(str(root / split), str(root / f"{split}_store"), out=quiet)
    index_jobs.build_index(
      index_jobs.BuildConfig(str(root / "index_store"), str(root / "idx")), out=quiet
    )
  with open(root / "labels.csv", "w") as f:
    f.write("id,url,landmark_id\n" + "".join(f"{k},x,{v}\n" for k, v in labels.items()))
  return root, labels


def test_parallel_and_store_verification_equal_single_process(gldv2, quiet):
  root, _ = gldv2
  pairs = {
    f"q{q}": [n[:-11] for n in sorted(os.listdir(root / "index")) if n.endswith(".delg_local")]
    for q in range(6)
  }
  options = reranking.MatchingOptions(
    ransac_seed=0, descriptor_matching_threshold=1.0, ransac_residual_threshold=20.0
  )
  expected = reranking.VerifyPairs(pairs, str(root / "test"), str(root / "index"), reranking.MatchingOptions(
    local_feature_extension=".delg_local", ransac_seed=0, descriptor_matching_threshold=1.0,
    ransac_residual_threshold=20.0))  # fmt: skip
  assert max(expected.values()) >= 30 and min(expected.values()) <= 5
  files = (
    rerank_parallel.FeatureSource(str(root / "test")),
    rerank_parallel.FeatureSource(str(root / "index")),
  )
  stores = (
    rerank_parallel.FeatureSource(str(root / "test_store")),
    rerank_parallel.FeatureSource(str(root / "index_store")),
  )
  for sources, workers in ((files, 1), (files, 2), (stores, 2)):
    stats = rerank_parallel.VerificationStats()
    got = rerank_parallel.VerifyPairsInProcesses(
      pairs, *sources, options, num_workers=workers, stats=stats
    )
    assert got == expected
    assert stats.num_pairs == 72 and stats.num_workers == workers


def _metrics(script, solution, predictions, capsys):
  capsys.readouterr()
  cli_harness.run_script(
    script, [f"--solution_path={solution}", f"--predictions_path={predictions}"]
  )
  return capsys.readouterr().out


def test_retrieval_csv_scores_as_computed_by_hand(gldv2, tmp_path, capsys):
  root, _ = gldv2
  common = [
    "--task=retrieval", f"--queries_path={root / 'test_store'}", f"--index_path={root / 'idx'}",
    f"--index_features_path={root / 'index_store'}",
  ]  # fmt: skip
  cli_harness.run_script("gldv2_submission", [*common, f"--output_path={tmp_path / 'global.csv'}"])
  cli_harness.run_script(
    "gldv2_submission",
    [
      *common,
      "--use_geometric_verification",
      "--num_workers=2",
      f"--output_path={tmp_path / 'gv.csv'}",
    ],
  )
  for shard in range(2):
    cli_harness.run_script(
      "gldv2_submission",
      [*common, "--use_geometric_verification", "--num_workers=1", "--num_shards=2",
       f"--shard_index={shard}", f"--output_path={tmp_path / 'sharded.csv'}"],
    )  # fmt: skip
  cli_harness.run_script(
    "gldv2_submission",
    [f"--output_path={tmp_path / 'sharded.csv'}", "--num_shards=2", "--merge_shards"],
  )
  assert (tmp_path / "sharded.csv").read_text() == (tmp_path / "gv.csv").read_text()
  rows = [line.split(",") for line in (tmp_path / "gv.csv").read_text().splitlines()]
  assert rows[0] == ["id", "images"] and len(rows) == 7
  assert all(len(r[1].split()) == 12 for r in rows[1:])  # every index image (< 100 exist)
  # Verification puts both views of each landmark query's landmark first.
  for query, images in rows[1:6]:
    landmark = int(query[1:]) % 4
    assert set(images.split()[:2]) == {f"idx{landmark}0", f"idx{landmark}1"}
  # Solution: q0..q4 public/private alternately, q5 (no landmark) ignored.
  solution = tmp_path / "solution.csv"
  lines = ["id,images,Usage"]
  for q in range(5):
    landmark = q % 4
    lines.append(f"q{q},idx{landmark}0 idx{landmark}1,{'Public' if q % 2 == 0 else 'Private'}")
  solution.write_text("\n".join([*lines, "q5,None,Ignored"]) + "\n")
  out = _metrics("compute_retrieval_metrics", solution, tmp_path / "gv.csv", capsys)
  assert "(Public)  Mean Average Precision: 1.000000" in out
  assert "(Private) Mean Average Precision: 1.000000" in out
  # Global ranking only: hand-computed AP from the written rankings.
  global_rows = {
    r[0]: r[1].split()
    for r in (x.split(",") for x in (tmp_path / "global.csv").read_text().splitlines()[1:])
  }
  expected = {}
  for q in range(5):
    truth = {f"idx{q % 4}0", f"idx{q % 4}1"}
    hits, ap = 0, 0.0
    for rank, image in enumerate(global_rows[f"q{q}"], start=1):
      if image in truth:
        hits += 1
        ap += hits / rank
    expected[q] = ap / 2
  out = _metrics("compute_retrieval_metrics", solution, tmp_path / "global.csv", capsys)
  public = np.mean([expected[q] for q in (0, 2, 4)])
  private = np.mean([expected[q] for q in (1, 3)])
  assert f"(Public)  Mean Average Precision: {public:f}" in out
  assert f"(Private) Mean Average Precision: {private:f}" in out


def test_recognition_csv_scores_as_computed_by_hand(gldv2, tmp_path, capsys):
  root, _ = gldv2
  cli_harness.run_script(
    "gldv2_submission",
    ["--task=recognition", f"--queries_path={root / 'test_store'}", f"--index_path={root / 'idx'}",
     f"--index_features_path={root / 'index_store'}", f"--labels_path={root / 'labels.csv'}",
     "--k=4", "--use_geometric_verification", "--num_workers=1", f"--output_path={tmp_path / 'rec.csv'}"],
  )  # fmt: skip
  rows = [line.split(",") for line in (tmp_path / "rec.csv").read_text().splitlines()]
  assert rows[0] == ["id", "landmarks"]
  predictions = {r[0]: (int(r[1].split()[0]), float(r[1].split()[1])) for r in rows[1:]}
  for q in range(5):
    assert predictions[f"q{q}"][0] == 100 + q % 4
  solution = tmp_path / "solution.csv"
  usage = ["Public", "Private", "Public", "Private", "Public", "Private"]
  truth = [str(100 + q % 4) for q in range(5)] + [""]
  solution.write_text(
    "id,landmarks,Usage\n" + "".join(f"q{q},{truth[q]},{usage[q]}\n" for q in range(6))
  )
  out = _metrics("compute_recognition_metrics", solution, tmp_path / "rec.csv", capsys)

  def gap(queries):
    ordered = sorted(queries, key=lambda q: -predictions[f"q{q}"][1])
    correct, total = 0, 0.0
    for i, q in enumerate(ordered, start=1):
      if truth[q] and predictions[f"q{q}"][0] == int(truth[q]):
        correct += 1
        total += correct / i
    return total / sum(1 for q in queries if truth[q])

  assert f"(Public)  Global Average Precision: {gap([0, 2, 4]):f}" in out
  assert f"(Private) Global Average Precision: {gap([1, 3, 5]):f}" in out
  assert "(Public)  Top-1 accuracy: 100.00" in out


def test_gldv2_bad_input_is_one_line(gldv2, tmp_path):
  root, _ = gldv2
  (tmp_path / "labels.csv").write_text("id,landmark\nidx00,1\n")
  with pytest.raises(SystemExit, match="expected columns id and landmark_id") as error:
    cli_harness.run_script(
      "gldv2_submission",
      ["--task=recognition", f"--queries_path={root / 'test_store'}", f"--index_path={root / 'idx'}",
       f"--labels_path={tmp_path / 'labels.csv'}", f"--output_path={tmp_path / 'x.csv'}"],
    )  # fmt: skip
  assert "\n" not in str(error.value)
  with pytest.raises(SystemExit, match=r"shard-00001-of-00002: shard 1 of 2 is missing"):
    (tmp_path / "y.csv.shard-00000-of-00002").write_text("id,images\n")
    cli_harness.run_script(
      "gldv2_submission",
      [f"--output_path={tmp_path / 'y.csv'}", "--num_shards=2", "--merge_shards"],
    )
