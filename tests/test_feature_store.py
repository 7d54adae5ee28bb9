"""Feature store: round trips, resumption after a kill, disjoint shards, bad stores."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest

from delf import datum_io, feature_conversion, feature_io, feature_store
from delf.protos import delf_config_pb2
from delf.retrieval import delg_extraction
from tests import cli_harness


@pytest.fixture
def quiet():
  with open(os.devnull, "w") as stream:
    yield stream


def _local(rng, n, dim=8):
  return (
    rng.uniform(0, 300, (n, 2)).astype(np.float32),
    rng.uniform(0.5, 2, n).astype(np.float32),
    rng.normal(size=(n, dim)).astype(np.float32),
    rng.uniform(0, 5, n).astype(np.float32),
  )


def _write(root, items, **kwargs):
  with feature_store.StoreWriter(root, **kwargs) as writer:
    for image_id, descriptor, local in items:
      writer.add(image_id, descriptor, local)


def _items(seed=0, count=7, dim=16):
  rng = np.random.default_rng(seed)
  items = []
  for i in range(count):
    descriptor = rng.normal(size=dim).astype(np.float32) if i != 3 else np.zeros([0], np.float32)
    items.append((f"im{i:02d}", descriptor, _local(rng, i % 4)))  # im00: no local feature
  return items


def test_round_trip_by_id_by_part_and_streamed(tmp_path):
  items = _items()
  _write(tmp_path / "s", items, images_per_file=3)
  store = feature_store.FeatureStore(tmp_path / "s")
  assert len(store.parts) == 3 and store.num_images == 7
  assert (store.global_dim, store.local_dim, store.dtype) == (16, 8, "float32")
  assert store.ids == [i for i, _, _ in items]
  for image_id, descriptor, local in items:
    np.testing.assert_array_equal(store.global_descriptor(image_id), descriptor)
    got = store.local_features(image_id)
    if len(local[3]):
      for expected, actual in zip(local, got.as_tuple()[:4]):
        np.testing.assert_array_equal(actual, expected)
      np.testing.assert_array_equal(got.orientations, np.zeros(len(local[3])))
    else:
      assert all(a.size == 0 for a in got.as_tuple())
  by_part = [record.id for n in range(len(store.parts)) for record in store.read_part(n)]
  assert by_part == store.ids
  dense = np.stack([d if d.size else np.zeros(16, np.float32) for _, d, _ in items])
  np.testing.assert_array_equal(store.read_global(), dense)
  blocks = list(store.iter_global_blocks(block_rows=2))
  np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), dense)
  assert [first for first, _ in blocks] == [0, 2, 3, 5, 6]
  assert all(isinstance(m, np.memmap) for m in store.global_memmaps())
  np.testing.assert_array_equal(store.empty_global_rows(), [3])
  with pytest.raises(KeyError, match="nope"):
    store.global_descriptor("nope")


def test_float16_halves_descriptor_bytes(tmp_path):
  items = _items(count=20, dim=512)
  _write(tmp_path / "f32", items)
  _write(tmp_path / "f16", items, dtype="float16")
  f32, f16 = (
    feature_store.FeatureStore(tmp_path / "f32"),
    feature_store.FeatureStore(tmp_path / "f16"),
  )
  assert f16.dtype == "float16"

  def descriptor_bytes(store):
    total = 0
    for part in store.parts:
      with h5py.File(part.path) as f:
        total += f["global/descriptors"].id.get_storage_size()
        total += f["local/descriptors"].id.get_storage_size()
    return total

  assert descriptor_bytes(f16) * 2 == descriptor_bytes(f32)
  np.testing.assert_allclose(f16.read_global(), f32.read_global(), atol=1e-3)


def test_resume_after_a_kill_extracts_only_missing_ids(tmp_path):
  items = _items(count=10)
  writer = feature_store.StoreWriter(tmp_path / "s", images_per_file=4)
  for image_id, descriptor, local in items[:6]:
    writer.add(image_id, descriptor, local)
  del writer  # Killed: one complete part (4 images) on disk, 2 buffered images lost, no manifest.
  with pytest.raises(feature_store.StoreError, match="interrupted"):
    feature_store.FeatureStore(tmp_path / "s")
  with feature_store.StoreWriter(tmp_path / "s", images_per_file=4) as writer:
    assert writer.done_ids == {i for i, _, _ in items[:4]}
    todo = [item for item in items if item[0] not in writer]
    for image_id, descriptor, local in todo:
      writer.add(image_id, descriptor, local)
  assert len(todo) == 6
  store = feature_store.FeatureStore(tmp_path / "s")
  assert store.ids == [i for i, _, _ in items]


def test_extraction_resumes_after_a_crash(tmp_path):
  """extract_delg_features into a store: a crash keeps complete parts; the rerun does the rest."""
  names = [f"img{i}" for i in range(6)]
  dataset = tmp_path / "gnd.json"
  dataset.write_text(json.dumps({"index_base": 0, "imlist": names, "qimlist": [], "gnd": []}))
  rng = np.random.default_rng(0)
  calls = []

  def extractor(image, resize_factor, fail_at=None):
    calls.append(1)
    if fail_at is not None and len(calls) == fail_at:
      raise KeyboardInterrupt
    n = 3
    return {
      "global_descriptor": rng.normal(size=4).astype(np.float32),
      "local_features": dict(
        zip(("locations", "scales", "descriptors", "attention"), _local(rng, n))
      ),
    }

  delf_config = delf_config_pb2.DelfConfig(use_global_features=True, use_local_features=True)

  config = delg_extraction.DelgExtractionConfig(
    dataset_file_path=str(dataset), image_set="index", output_store=str(tmp_path / "store"),
    store_images_per_file=2,
  )  # fmt: skip
  loader = lambda path: np.zeros([8, 8, 3], np.uint8)  # noqa: E731
  with open(os.devnull, "w") as quiet, pytest.raises(KeyboardInterrupt):
    delg_extraction.extract_delg_features(
      config, delf_config=delf_config, extractor_fn=lambda im, f: extractor(im, f, fail_at=4),
      image_loader=loader, out=quiet,
    )  # fmt: skip
  with open(os.devnull, "w") as quiet:
    summary = delg_extraction.extract_delg_features(
      config, delf_config=delf_config, extractor_fn=extractor, image_loader=loader, out=quiet
    )
  assert (summary.num_skipped, summary.num_extracted) == (3, 3)  # 2 in a part + 1 flushed
  assert feature_store.FeatureStore(tmp_path / "store").ids == names


def test_disjoint_shards_need_no_merge(tmp_path):
  items = _items(count=9)
  for shard in range(3):
    _write(
      tmp_path / "s",
      [item for i, item in enumerate(items) if i % 3 == shard],
      shard_index=shard,
      num_shards=3,
      images_per_file=2,
    )
  names = sorted(os.listdir(tmp_path / "s"))
  assert [n for n in names if n.endswith(".json")] == [
    f"shard-{i:05d}-of-00003.json" for i in range(3)
  ]
  store = feature_store.FeatureStore(tmp_path / "s")
  assert sorted(store.ids) == sorted(i for i, _, _ in items)
  for image_id, descriptor, _ in items:
    np.testing.assert_array_equal(store.global_descriptor(image_id), descriptor)


def test_bad_stores_are_one_line_errors(tmp_path):
  items = _items(count=6)
  for shard in range(2):
    _write(tmp_path / "good", items[shard::2], shard_index=shard, num_shards=2, images_per_file=2)

  def broken(name):
    path = tmp_path / name
    shutil.copytree(tmp_path / "good", path)
    return path

  missing_shard = broken("missing_shard")
  os.remove(missing_shard / "shard-00001-of-00002.json")
  missing_part = broken("missing_part")
  os.remove(missing_part / "part-00000-of-00002-00001.h5")
  truncated = broken("truncated")
  part = truncated / "part-00000-of-00002-00000.h5"
  part.write_bytes(part.read_bytes()[:100])
  corrupt = broken("corrupt")
  part = corrupt / "part-00001-of-00002-00000.h5"
  part.write_bytes(b"\0" * part.stat().st_size)
  cases = {
    missing_shard: "shard\\(s\\) 1 of 2 have no manifest",
    missing_part: "part-00000-of-00002-00001.h5: shard file listed in .* is missing",
    truncated: "part-00000-of-00002-00000.h5: .* bytes, .* says",
    corrupt: "part-00001-of-00002-00000.h5: not a readable HDF5 shard file",
    tmp_path / "nothing": "not found",
  }
  for path, message in cases.items():
    with pytest.raises(feature_store.StoreError, match=message) as error:
      feature_store.FeatureStore(path)
    assert "\n" not in str(error.value)
  with pytest.raises(feature_store.StoreError, match="dimension 5, the store 16"):
    _write(tmp_path / "good2", [items[0], ("x", np.zeros(5, np.float32), items[1][2])])
  with pytest.raises(feature_store.StoreError, match="dtype float32, this run writes float16"):
    feature_store.StoreWriter(tmp_path / "good", dtype="float16", num_shards=2)


def _write_delg_files(folder, items):
  folder.mkdir()
  for image_id, descriptor, local in items:
    datum_io.WriteToFile(descriptor, str(folder / f"{image_id}.delg_global"))
    feature_io.WriteToFile(str(folder / f"{image_id}.delg_local"), *local)


def test_files_to_store_to_files_is_byte_identical(tmp_path, capsys):
  _write_delg_files(tmp_path / "files", _items(count=5))
  cli_harness.run_script(
    "convert_features", [f"--input_dir={tmp_path / 'files'}", f"--output_store={tmp_path / 's'}"]
  )
  cli_harness.run_script(
    "convert_features", [f"--input_store={tmp_path / 's'}", f"--output_dir={tmp_path / 'back'}"]
  )
  originals = sorted(os.listdir(tmp_path / "files"))
  assert sorted(os.listdir(tmp_path / "back")) == originals and len(originals) == 10
  for name in originals:
    assert (tmp_path / "back" / name).read_bytes() == (tmp_path / "files" / name).read_bytes()
  assert "Stored 5 images" in capsys.readouterr().out


def test_reference_written_delf_files_round_trip(tmp_path, interop_dir, quiet):
  for name in ("delg_local_query_00.delf",):  # 1000 x 128-D, written by the reference
    files, store, back = tmp_path / name / "files", tmp_path / name / "s", tmp_path / name / "back"
    files.mkdir(parents=True)
    shutil.copy(interop_dir / name, files / name)
    feature_conversion.files_to_store(str(files), str(store), kind="delf", out=quiet)
    feature_conversion.store_to_files(str(store), str(back), out=quiet)
    assert (back / name).read_bytes() == (interop_dir / name).read_bytes()


def test_conversion_refuses_what_would_not_round_trip(tmp_path):
  items = _items(count=2)
  _write_delg_files(tmp_path / "files", items)
  datum_io.WriteToFile(np.arange(4, dtype=np.uint32), str(tmp_path / "files" / "im00.delg_global"))
  with pytest.raises(SystemExit, match=r"im00\.delg_global: a uint32 array"):
    cli_harness.run_script(
      "convert_features", [f"--input_dir={tmp_path / 'files'}", f"--output_store={tmp_path / 's'}"]
    )
  os.remove(tmp_path / "files" / "im00.delg_global")
  with pytest.raises(feature_conversion.ConversionError, match="only one of"):
    feature_conversion.files_to_store(str(tmp_path / "files"), str(tmp_path / "s2"))


def test_perform_retrieval_reads_stores(tmp_path, quiet):
  """The same metrics from per-image files and from stores converted from them."""
  rng = np.random.default_rng(1)
  names_q, names_i = ["qa", "qb"], [f"im{j}" for j in range(12)]
  query_dir, index_dir = tmp_path / "q", tmp_path / "i"
  _write_delg_files(
    query_dir, [(n, rng.normal(size=8).astype(np.float32), _local(rng, 5)) for n in names_q]
  )
  _write_delg_files(
    index_dir, [(n, rng.normal(size=8).astype(np.float32), _local(rng, 5)) for n in names_i]
  )
  gt = [
    {"easy": np.array([0]), "hard": np.array([1]), "junk": np.array([2]), "bbx": [0, 0, 9, 9]}
  ] * 2
  from delf.retrieval import demo_benchmark, retrieval

  demo_benchmark.SaveGroundTruthJson(str(tmp_path / "gnd.json"), names_q, names_i, gt)
  for folder in ("q", "i"):
    feature_conversion.files_to_store(
      str(tmp_path / folder), str(tmp_path / f"{folder}_store"), out=quiet
    )
  results = []
  for suffix in ("", "_store"):
    config = retrieval.RetrievalConfig(
      dataset_file_path=str(tmp_path / "gnd.json"),
      query_features_dir=str(tmp_path / f"q{suffix}"),
      index_features_dir=str(tmp_path / f"i{suffix}"),
      use_geometric_verification=True,
      output_dir=str(tmp_path / f"out{suffix}"),
    )
    results.append(retrieval.perform_retrieval(config, out=quiet))
  np.testing.assert_array_equal(results[0].ranks_before_gv, results[1].ranks_before_gv)
  for name in ("medium", "hard"):
    np.testing.assert_array_equal(results[0].ranks_after_gv[name], results[1].ranks_after_gv[name])
  assert (tmp_path / "out/metrics.txt").read_text() == (
    tmp_path / "out_store/metrics.txt"
  ).read_text()
