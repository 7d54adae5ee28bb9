"""build_image_dataset end to end on demo data: shards, split, relabelling, skip list, metadata."""

from __future__ import annotations

import csv
import json
import pathlib

import pytest

from delf.data import build, gldv2_csv, metadata, split, tfrecord
from tests.data_fixtures import make_tiny_gldv2, run_data_script


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return make_tiny_gldv2(
    tmp_path_factory.mktemp("gldv2"), num_landmarks=4, images_per_landmark=5, plant_bad_files=True
  )


def _flags(info, output, **extra):
  args = {
    "train_csv_path": str(info.root / "train" / "train.csv"),
    "train_clean_csv_path": str(info.root / "train" / "train_clean.csv"),
    "train_directory": str(info.root / "train" / "*" / "*" / "*") + "/",
    "output_directory": str(output),
    "num_shards": 3,
    "generate_train_validation_splits": True,
    "validation_split_size": 0.2,
  }
  args.update(extra)
  return {k: v for k, v in args.items() if v is not None}


def _read_split(output: pathlib.Path, prefix: str, num_shards: int = 3):
  rows = []
  for k in range(num_shards):
    path = output / f"{prefix}-{k:05d}-of-{num_shards:05d}"
    assert path.is_file()
    rows += [tfrecord.parse_example(r) for r in tfrecord.read_tfrecord(path)]
  return rows


@pytest.fixture(scope="module")
def clean_build(dataset, tmp_path_factory):
  output = tmp_path_factory.mktemp("out_parallel")
  run_data_script("build_image_dataset", **_flags(dataset, output, num_workers=2))
  return output


def test_clean_mode_split_and_relabelling(dataset, clean_build):
  output = clean_build
  bad = {kind: image_id for image_id, kind in dataset.bad_files.items()}
  # relabeling.csv: every listed landmark id, ascending, even if some files are missing.
  with open(output / "relabeling.csv", newline="") as f:
    relabeling = list(csv.reader(f))
  assert relabeling[0] == ["new_label", "old_label"]
  assert [[int(a), int(b)] for a, b in relabeling[1:]] == [
    [n, old] for n, old in enumerate(sorted(dataset.landmark_ids))
  ]
  new_label = {old: n for n, old in enumerate(sorted(dataset.landmark_ids))}

  validation = _read_split(output, "validation")
  train = _read_split(output, "train")
  written = [r["image/id"][0].decode() for r in validation + train]
  expected_ids = [i for i in dataset.train_clean_ids if i not in (bad["truncated"], bad["missing"])]
  assert sorted(written) == sorted(expected_ids)  # grayscale kept, noisy excluded
  assert bad["grayscale"] in written
  assert bad["png"] in written  # PNG data named .jpg: decode_jpeg decodes it, as the reference
  for record in validation + train:
    image_id = record["image/id"][0].decode()
    assert record["image/class/label"] == [new_label[dataset.labels[image_id]]]
    assert record["image/channels"] == [3] and record["image/format"] == [b"JPEG"]
    assert (record["image/height"], record["image/width"]) == ([48], [64])
    assert record["image/format"] == [b"JPEG"]  # the reference's value, whatever the data
    assert record["image/encoded"][0] == dataset.path("train", image_id).read_bytes()
  # The split is the spec's algorithm on the present, decodable images in CSV order.
  labels = [new_label[dataset.labels[i]] for i in expected_ids]
  val_idx, train_idx = split.train_validation_split(labels, 0.2, seed=0)
  assert [r["image/id"][0].decode() for r in validation] == [expected_ids[i] for i in val_idx]
  assert [r["image/id"][0].decode() for r in train] == [expected_ids[i] for i in train_idx]
  # Per class: max(1, int(0.2 n)) validation images.
  for label in set(labels):
    n = labels.count(label)
    got = sum(r["image/class/label"] == [label] for r in validation)
    assert got == max(1, int(0.2 * n))


def test_skip_list_and_metadata(dataset, clean_build):
  bad = {kind: image_id for image_id, kind in dataset.bad_files.items()}
  with open(clean_build / build.SKIPPED_FILENAME, newline="") as f:
    skipped = {row["id"]: row["reason"] for row in csv.DictReader(f)}
  assert set(skipped) == {bad["truncated"], bad["missing"]}
  assert "no file" in skipped[bad["missing"]]
  assert "truncated" in skipped[bad["truncated"]]
  meta = metadata.read_metadata(str(clean_build / "train-*"))
  assert meta == json.loads((clean_build / metadata.METADATA_FILENAME).read_text())
  assert meta["format_version"] == 2
  assert meta["num_classes"] == 4
  # The manifest lists every shard with its split, example count and size.
  assert sorted(meta["files"]) == sorted(p.name for p in clean_build.glob("*-of-*"))
  for name, entry in meta["files"].items():
    path = clean_build / name
    assert entry["split"] == name.split("-")[0]
    assert entry["bytes"] == path.stat().st_size
    assert entry["examples"] == len(list(tfrecord.read_tfrecord(path)))
  total = len(dataset.train_clean_ids) - 2
  assert meta["num_examples"]["validation"] == 4  # 4 classes of 5-6 images: 1 each
  assert meta["num_examples"] == {"train": total - 4, "validation": 4, "test": 0}
  assert meta["flags"]["num_shards"] == 3 and meta["flags"]["seed"] == 0
  assert metadata.read_metadata(str(clean_build)) == meta
  assert metadata.read_metadata(str(clean_build / "nothing" / "x-*")) is None


def test_parallel_equals_sequential(dataset, clean_build, tmp_path):
  build.build_image_dataset(build.BuildConfig(**_flags(dataset, str(tmp_path), num_workers=1)))
  for path in sorted(clean_build.glob("*-of-*")):
    assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
  assert (tmp_path / "relabeling.csv").read_bytes() == (clean_build / "relabeling.csv").read_bytes()


def test_full_csv_mode_raw_labels_and_test_split(dataset, tmp_path, capsys):
  summary = build.build_image_dataset(
    build.BuildConfig(
      **_flags(
        dataset,
        str(tmp_path),
        train_clean_csv_path=None,
        generate_train_validation_splits=False,
        num_shards=8,
        test_csv_path=str(dataset.root / "test" / "test.csv"),
        test_directory=str(dataset.root / "test" / "*" / "*" / "*"),
        num_workers=2,
      )
    )
  )
  assert not (tmp_path / "relabeling.csv").exists()
  train = _read_split(tmp_path, "train", 8)
  with open(dataset.root / "train" / "train.csv", newline="") as f:
    raw = {row["id"]: int(row["landmark_id"]) for row in csv.DictReader(f)}
  ids = [r["image/id"][0].decode() for r in train]
  # Discovery order, raw landmark ids, noisy images included; 8 shards all exist.
  assert ids == sorted(ids, key=lambda i: str(dataset.path("train", i)))
  assert set(dataset.noisy_ids) <= set(ids)
  for record, image_id in zip(train, ids):
    assert record["image/class/label"] == [raw[image_id]]
  test = _read_split(tmp_path, "test", 8)
  assert sorted(r["image/id"][0].decode() for r in test) == sorted(dataset.test_ids)
  assert all("image/class/label" not in r for r in test)
  assert summary.num_examples == {"train": len(ids), "validation": 0, "test": len(test)}
  assert summary.num_classes == max(raw.values()) + 1
  assert not (tmp_path / "validation-00000-of-00008").exists()
  out = capsys.readouterr().out
  assert "Skipped 1 images" in out and "images/s" in out  # the truncated one


def test_clean_csv_rules(tmp_path):
  # Duplicate id: first position, last label. Missing files are reported, and the
  # relabelling still counts their labels.
  images = tmp_path / "img"
  images.mkdir()
  from PIL import Image

  for image_id in ("a", "b", "c"):
    Image.new("RGB", (8, 8), (10, 20, 30)).save(images / f"{image_id}.jpg")
  clean = tmp_path / "clean.csv"
  clean.write_text("landmark_id,images\n7,a b\n3,c a\n9,zz\n")
  result = gldv2_csv.clean_csv_images(str(images), str(clean))
  assert result.ids == ["a", "b", "c"]
  assert result.labels == [0, 1, 0]  # sorted old labels 3, 7, 9 -> 0, 1, 2; a took 3
  assert result.relabeling == [(0, 3), (1, 7), (2, 9)]
  assert result.missing == [("zz", "listed in the clean CSV but no file found")]
  bad = tmp_path / "bad.csv"
  bad.write_text("landmark,images\n1,a\n")
  with pytest.raises(gldv2_csv.CsvFormatError, match=r"bad.csv: missing column"):
    gldv2_csv.clean_csv_images(str(images), str(bad))
  bad.write_text("landmark_id,images\nx1,a\n")
  with pytest.raises(gldv2_csv.CsvFormatError, match=r"bad.csv:2: landmark_id 'x1'"):
    gldv2_csv.read_clean_csv(str(bad))


def test_bad_flags_give_one_line_errors(dataset, tmp_path):
  with pytest.raises(SystemExit, match=r"build_image_dataset: .*strictly between 0 and 1"):
    run_data_script("build_image_dataset", **_flags(dataset, tmp_path, validation_split_size=1.0))
  with pytest.raises(SystemExit, match=r"nope\.csv: cannot open CSV"):
    run_data_script(
      "build_image_dataset",
      **_flags(dataset, tmp_path, train_clean_csv_path=str(tmp_path / "nope.csv")),
    )
  assert not list(tmp_path.glob("*-of-*"))


def test_every_shard_is_created_even_when_empty(dataset, tmp_path):
  summary = build.build_image_dataset(
    build.BuildConfig(**_flags(dataset, str(tmp_path), num_shards=6, num_workers=1))
  )
  assert summary.num_examples["validation"] == 4
  sizes = [
    len(list(tfrecord.read_tfrecord(tmp_path / f"validation-{k:05d}-of-00006"))) for k in range(6)
  ]
  assert sizes == [0, 1, 1, 0, 1, 1]  # boundaries int(linspace(0, 4, 7)) = 0,0,1,2,2,3,4
  assert (tmp_path / "validation-00000-of-00006").stat().st_size == 0
  assert len(summary.shard_paths["train"]) == 6
  assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_test_split_needs_test_directory(dataset, tmp_path):
  config = build.BuildConfig(**_flags(dataset, str(tmp_path), test_csv_path="test.csv"))
  with pytest.raises(ValueError, match="test_directory"):
    build.build_image_dataset(config)


def test_relabeling_csv_matches_reference_file(interop_dir, tmp_path):
  # The reference's relabeling.csv from its demo run; rebuild it from a clean CSV whose
  # images were never downloaded but one: the relabelling counts every listed id (KB-3).
  reference = (interop_dir / "relabeling.csv").read_bytes()
  old_labels = [int(line.split(",")[1]) for line in reference.decode().splitlines()[1:]]
  rows = [f"{label},{n:016x} {n + 500:016x}" for n, label in enumerate(reversed(old_labels))]
  clean = tmp_path / "train_clean.csv"
  clean.write_text("landmark_id,images\n" + "\n".join(rows) + "\n")
  from PIL import Image

  (tmp_path / "one_image").mkdir()
  Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "one_image" / f"{0:016x}.jpg")
  summary = build.build_image_dataset(
    build.BuildConfig(
      train_directory=str(tmp_path / "one_image"),
      output_directory=str(tmp_path / "out"),
      train_clean_csv_path=str(clean),
      num_shards=2,
      generate_train_validation_splits=True,
      num_workers=1,
    )
  )
  assert (tmp_path / "out" / "relabeling.csv").read_bytes() == reference
  assert summary.num_classes == len(old_labels)
  assert len(summary.skipped) == 2 * len(old_labels) - 1
  assert summary.num_examples == {"train": 0, "validation": 1, "test": 0}


def test_flag_names_types_and_defaults_match_spec():
  from absl import flags

  from tests.cli_harness import load_script

  load_script("build_image_dataset")
  expected = {
    "train_directory": ("string", "/tmp/"),
    "test_directory": ("string", None),
    "output_directory": ("string", "/tmp/"),
    "train_csv_path": ("string", "/tmp/train.csv"),
    "train_clean_csv_path": ("string", None),
    "test_csv_path": ("string", None),
    "num_shards": ("int", 128),
    "generate_train_validation_splits": ("bool", False),
    "validation_split_size": ("float", 0.2),
    "seed": ("int", 0),
    "num_workers": ("int", None),  # ours (KB-6): None = all cores
  }
  registered = {
    f.name: f for f in flags.FLAGS.flags_by_module_dict()["scripts.build_image_dataset"]
  }
  assert set(registered) == set(expected)
  for name, (kind, default) in expected.items():
    assert (registered[name].flag_type(), registered[name].default) == (kind, default), name


def test_truncated_jpeg_rejected_even_when_pillow_loads_truncated_images(dataset):
  # delf.extraction.image_io switches Pillow's process-wide truncated-image loading
  # on (KB-46); the build must still reject a file TensorFlow cannot decode.
  from PIL import ImageFile

  import delf.extraction.image_io  # noqa: F401  (turns the switch on)

  assert ImageFile.LOAD_TRUNCATED_IMAGES
  truncated_id = next(i for i, kind in dataset.bad_files.items() if kind == "truncated")
  truncated = dataset.path("train", truncated_id)
  *_, problem = build.validate_image(str(truncated))
  assert problem is not None and "truncated" in problem
  assert ImageFile.LOAD_TRUNCATED_IMAGES  # Restored afterwards.
