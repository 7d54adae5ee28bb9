"""Global search index: exact = NumPy ranking (ties included), recall floors, files, errors."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from delf import feature_store
from delf.retrieval import index as search_index
from delf.retrieval import index_jobs, query_expansion, retrieval
from tests import cli_harness


@pytest.fixture
def quiet():
  with open(os.devnull, "w") as stream:
    yield stream


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(rng, n, dim, num_clusters=20, latent=12):
  """Unit vectors near a low-dimensional manifold, in clusters (like real descriptors)."""
  basis = rng.normal(size=(latent, dim))
  centers = rng.normal(size=(num_clusters, latent)) * 2.0
  z = centers[rng.integers(0, num_clusters, n)] + rng.normal(size=(n, latent))
  return _unit(z @ basis + 0.1 * rng.normal(size=(n, dim)))


def _build(spec, vectors, ids=None):
  ids = ids or [f"v{i}" for i in range(len(vectors))]
  return search_index.build_from_blocks(
    spec, vectors.shape[1], len(vectors), lambda: [vectors[:300], vectors[300:]],
    lambda n: vectors[:n], ids=ids,
  )  # fmt: skip


def test_exact_index_equals_the_numpy_ranking_with_ties():
  rng = np.random.default_rng(0)
  index_vectors = _unit(rng.normal(size=(700, 64)))
  index_vectors[[40, 500, 650]] = index_vectors[3]  # exact ties: ascending id must win
  index_vectors[77] = 0.0  # a missing descriptor (KB-39): score 0
  queries = _unit(rng.normal(size=(30, 64)))
  queries[5] = index_vectors[3]
  queries[6] = _unit(np.eye(64, dtype=np.float32)[0])
  _, expected = retrieval.RankByGlobalSimilarity(queries, index_vectors)
  index = _build(search_index.IndexSpec(), index_vectors)
  for k in (1, 10, 100, 700):
    result = index.search(queries, k, batch_size=7)
    np.testing.assert_array_equal(result.rows, expected[:, :k])
  assert list(result.rows[5, :4]) == [3, 40, 500, 650]


def test_approximate_indexes_reach_their_recall_floor():
  rng = np.random.default_rng(1)
  vectors = _clustered(rng, 3000, 64)
  queries = _unit(vectors[rng.integers(0, 3000, 40)] + 0.05 * rng.normal(size=(40, 64)))
  _, exact = retrieval.RankByGlobalSimilarity(queries, vectors)

  def recall(result, k=50):
    return np.mean([len(set(r[:k]) & set(e[:k])) / k for r, e in zip(result.rows, exact)])

  ivfpq = _build(
    search_index.IndexSpec(kind="ivfpq", nlist=16, pq_bytes=16, pq_bits=6, nprobe=8, opq=False),
    vectors,
  )
  hnsw = _build(search_index.IndexSpec(kind="hnsw", hnsw_m=16, ef_search=64), vectors)
  hnsw_reduced = _build(search_index.IndexSpec(kind="hnsw", reduced_dim=16), vectors)
  assert recall(ivfpq.search(queries, 50)) >= 0.5
  refined = ivfpq.search(queries, 50, refine_vectors=lambda r: vectors[r], refine_factor=4)
  assert recall(refined) >= 0.9
  assert recall(hnsw.search(queries, 50)) >= 0.95
  assert (
    recall(hnsw_reduced.search(queries, 50, refine_vectors=lambda r: vectors[r], refine_factor=4))
    >= 0.9
  )
  assert ivfpq.bytes_per_vector() < 64  # 12 bytes of codes + 8 of id + quantisers


def test_refinement_gives_the_exact_ranking_of_the_fetched_candidates(tmp_path):
  rng = np.random.default_rng(5)
  vectors = _clustered(rng, 2000, 32)
  vectors[[10, 11]] = vectors[12]  # exact ties among the candidates: lower row first
  queries = _unit(vectors[rng.integers(0, 2000, 21)] + 0.05 * rng.normal(size=(21, 32)))
  queries[0] = vectors[12]
  ivfpq = _build(
    search_index.IndexSpec(kind="ivfpq", nlist=16, pq_bytes=8, pq_bits=6, nprobe=4, opq=False),
    vectors,
  )
  k, factor = 20, 3
  _, fetched = ivfpq._faiss_search(queries, k * factor)
  fetched[1, 7:] = -1  # fewer valid candidates than k: the rest of the row stays -1
  stores = {}
  for dtype in ("float32", "float16"):
    root = tmp_path / dtype
    with feature_store.StoreWriter(root, images_per_file=300, dtype=dtype, has_local=False) as w:
      for i, v in enumerate(vectors):
        w.add(f"{i:04d}", v)
    stores[dtype] = search_index.StoreVectors(feature_store.FeatureStore(root))
  sources = {  # name: (source, the vectors it holds)
    "callable": (lambda r: vectors[r], vectors),
    "memory": (search_index.MemoryVectors(vectors), vectors),
    "store": (stores["float32"], vectors),
    "float16 store": (stores["float16"], vectors.astype(np.float16).astype(np.float32)),
  }
  for name, (source, held) in sources.items():
    for per_gather in (1, 8, 64):
      scores, rows = search_index._refine(queries, fetched, k, source, per_gather)
      for q in range(len(queries)):
        candidates = np.sort(fetched[q][fetched[q] >= 0])
        exact = held[candidates].astype(np.float64) @ queries[q]
        expected = candidates[np.lexsort((candidates, -exact))][:k]
        found = rows[q][: len(expected)]
        np.testing.assert_array_equal(found, expected, err_msg=f"{name} {per_gather} {q}")
        assert (rows[q][len(expected) :] == -1).all()
        assert np.isneginf(scores[q][len(expected) :]).all()
        np.testing.assert_allclose(scores[q][: len(expected)], held[found] @ queries[q], atol=1e-5)
  with pytest.raises(search_index.SearchIndexError, match="row 2000 beyond the 2000") as error:
    search_index.MemoryVectors(vectors).inner_products(queries[:1], np.array([[3, 2000]]))
  assert "\n" not in str(error.value)
  assert list(rows[0, :3]) == [10, 11, 12]


def test_save_load_and_bad_input_are_one_line_errors(tmp_path, quiet):
  rng = np.random.default_rng(2)
  vectors = _unit(rng.normal(size=(50, 16)))
  with feature_store.StoreWriter(tmp_path / "store", has_local=False) as writer:
    for i, v in enumerate(vectors):
      writer.add(f"id{i}", v)
  with feature_store.StoreWriter(tmp_path / "other", has_local=False) as writer:
    for i, v in enumerate(vectors[:-1]):
      writer.add(f"id{i}", v)
  cli_harness.run_script(
    "build_index", [f"--features_path={tmp_path / 'store'}", f"--index_path={tmp_path / 'idx'}"]
  )
  index = search_index.GlobalIndex.load(tmp_path / "idx")
  assert index.ids == [f"id{i}" for i in range(50)] and index.num_vectors == 50
  np.testing.assert_array_equal(index.search(vectors[:3], 1).rows[:, 0], [0, 1, 2])
  errors = {
    "dimension 8": lambda: index.search(np.ones([2, 8], np.float32), 5),
    "built from another store": lambda: index_jobs.open_index(
      str(tmp_path / "idx"), str(tmp_path / "other")
    ),
    "not an index directory": lambda: search_index.GlobalIndex.load(tmp_path / "store"),
    "index kind must be one of": lambda: search_index.IndexSpec(kind="lsh"),
  }
  for message, call in errors.items():
    with pytest.raises(ValueError, match=message) as error:
      call()
    assert "\n" not in str(error.value)
  with pytest.raises(SystemExit, match=r"search_index: .*dimension 12.*has 16"):
    with feature_store.StoreWriter(tmp_path / "q12", has_local=False) as writer:
      writer.add("q", np.ones(12, np.float32))
    cli_harness.run_script(
      "search_index",
      [f"--index_path={tmp_path / 'idx'}", f"--queries_path={tmp_path / 'q12'}",
       f"--output_path={tmp_path / 'x.csv'}"],
    )  # fmt: skip


def test_search_index_csv_and_shard_merge(tmp_path, capsys):
  rng = np.random.default_rng(3)
  vectors = _unit(rng.normal(size=(40, 8)))
  for name, rows in (("index", vectors), ("queries", vectors[:9])):
    with feature_store.StoreWriter(tmp_path / name, has_local=False) as writer:
      for i, v in enumerate(rows):
        writer.add(f"{name[0]}{i}", v)
  cli_harness.run_script(
    "build_index", [f"--features_path={tmp_path / 'index'}", f"--index_path={tmp_path / 'idx'}"]
  )
  common = [f"--index_path={tmp_path / 'idx'}", f"--queries_path={tmp_path / 'queries'}", "--k=5"]
  cli_harness.run_script("search_index", [*common, f"--output_path={tmp_path / 'one.csv'}"])
  for shard in range(3):
    cli_harness.run_script(
      "search_index",
      [*common, f"--output_path={tmp_path / 'sharded.csv'}", "--num_shards=3", f"--shard_index={shard}"],
    )  # fmt: skip
  cli_harness.run_script(
    "search_index",
    [f"--output_path={tmp_path / 'sharded.csv'}", "--num_shards=3", "--merge_shards"],
  )
  one = (tmp_path / "one.csv").read_text()
  assert (tmp_path / "sharded.csv").read_text() == one
  lines = one.splitlines()
  assert lines[0] == "id,images,scores" and len(lines) == 10
  first_id, images, scores = lines[1].split(",")
  assert first_id == "q0" and images.split()[0] == "i0" and len(images.split()) == 5
  assert abs(float(scores.split()[0]) - 1.0) < 1e-6
  assert "Memory estimate: index" in capsys.readouterr().out


def test_perform_retrieval_with_an_exact_index_gives_identical_metrics(tmp_path, quiet):
  """Dense path vs --index_path on stores, with and without alpha-QE; distractors allowed."""
  from delf.retrieval import demo_benchmark

  rng = np.random.default_rng(4)
  index_names = [f"im{j}" for j in range(30)]
  query_names = ["qa", "qb", "qc"]
  index_vectors = _clustered(rng, 30, 32, num_clusters=3)
  index_vectors[7] = index_vectors[2]  # a tie
  queries = _unit(index_vectors[[0, 10, 20]] + 0.3 * rng.normal(size=(3, 32)))
  ground_truth = [
    {"easy": np.arange(q * 10, q * 10 + 5), "hard": np.arange(q * 10 + 5, q * 10 + 9),
     "junk": np.array([q * 10 + 9]), "bbx": [0, 0, 9, 9]}
    for q in range(3)
  ]  # fmt: skip
  demo_benchmark.SaveGroundTruthJson(
    str(tmp_path / "gnd.json"), query_names, index_names, ground_truth
  )
  for name, ids, rows in (("q", query_names, queries), ("i", index_names, index_vectors)):
    with feature_store.StoreWriter(tmp_path / name, has_local=False) as writer:
      for image_id, v in zip(ids, rows):
        writer.add(image_id, v)
  index_jobs.build_index(
    index_jobs.BuildConfig(str(tmp_path / "i"), str(tmp_path / "idx")), out=quiet
  )
  for qe in (0, 2):
    results = []
    for index_path in ("", str(tmp_path / "idx")):
      config = retrieval.RetrievalConfig(
        dataset_file_path=str(tmp_path / "gnd.json"), query_features_dir=str(tmp_path / "q"),
        index_features_dir=str(tmp_path / "i"), output_dir=str(tmp_path / f"out{qe}{bool(index_path)}"),
        index_path=index_path, query_expansion_top_n=qe,
      )  # fmt: skip
      results.append(retrieval.perform_retrieval(config, out=quiet))
    np.testing.assert_array_equal(results[0].ranks_before_gv, results[1].ranks_before_gv)
    assert results[0].mean_average_precision == results[1].mean_average_precision


def test_alpha_query_expansion_and_dba_closed_form():
  database = np.array([[1, 0], [0.8, 0.6], [0, 1]], np.float32)
  search = retrieval._DenseSearch(database)
  query = np.array([[1, 0]], np.float32)
  expanded = query_expansion.alpha_query_expansion(query, search, lambda r: database[r], 2, 3.0)
  # q + 1^3 * x0 + 0.8^3 * x1 = (2 + 0.4096, 0.3072), normalised.
  expected = np.array([2.4096, 0.3072]) / np.hypot(2.4096, 0.3072)
  np.testing.assert_allclose(expanded[0], expected, rtol=1e-6)
  augmented = query_expansion.database_augmentation(database, search, 2, 1.0)
  # x2's neighbours: itself (1.0) and x1 (0.6): (0.48, 1.36) normalised.
  np.testing.assert_allclose(augmented[2], np.array([0.48, 1.36]) / np.hypot(0.48, 1.36), rtol=1e-6)
  np.testing.assert_array_equal(
    query_expansion.alpha_query_expansion(query, search, lambda r: database[r], 0), query
  )


def test_search_time_nprobe_overrides_the_built_setting(tmp_path, capsys):
  rng = np.random.default_rng(7)
  vectors = _clustered(rng, 600, 16)
  queries = _unit(vectors[:12] + 0.05 * rng.normal(size=(12, 16)))
  for name, rows in (("index", vectors), ("queries", queries)):
    with feature_store.StoreWriter(tmp_path / name, has_local=False) as writer:
      for i, v in enumerate(rows):
        writer.add(f"{name[0]}{i:03d}", v)
  cli_harness.run_script(
    "build_index",
    [f"--features_path={tmp_path / 'index'}", f"--index_path={tmp_path / 'ivf'}",
     "--kind=ivfpq", "--nlist=16", "--pq_bytes=4", "--pq_bits=6", "--noopq", "--nprobe=1"],
  )  # fmt: skip
  common = [f"--index_path={tmp_path / 'ivf'}", f"--queries_path={tmp_path / 'queries'}", "--k=10"]
  index = search_index.GlobalIndex.load(tmp_path / "ivf")
  for nprobe in (0, 16):
    out = tmp_path / f"nprobe{nprobe}.csv"
    cli_harness.run_script("search_index", [*common, f"--output_path={out}", f"--nprobe={nprobe}"])
    index.spec = dataclasses.replace(index.spec, nprobe=nprobe or 1)
    expected = index.search(queries, 10).rows
    got = [line.split(",")[1].split() for line in out.read_text().splitlines()[1:]]
    assert got == [[f"i{row:03d}" for row in rows] for rows in expected]
    assert f"ivfpq nprobe {nprobe or 1}, no refinement" in capsys.readouterr().out
  # The override takes effect: scanning all 16 lists finds other neighbours than one list.
  assert (tmp_path / "nprobe16.csv").read_text() != (tmp_path / "nprobe0.csv").read_text()
  cli_harness.run_script(
    "build_index", [f"--features_path={tmp_path / 'index'}", f"--index_path={tmp_path / 'flat'}"]
  )
  with pytest.raises(
    SystemExit, match=r"search_index: --nprobe applies to ivfpq indexes; .* exact"
  ):
    cli_harness.run_script(
      "search_index",
      [f"--index_path={tmp_path / 'flat'}", f"--queries_path={tmp_path / 'queries'}",
       f"--output_path={tmp_path / 'x.csv'}", "--nprobe=4"],
    )  # fmt: skip
