"""The dataset build with bad input: no images, mixed builds, failed builds, bad CSVs, odd files.

Issue 8 items 1-3 and the fidelity points: whatever the build keeps must decode in the
training pipeline (TensorFlow's decoder decides), PNG data named .jpg is kept as the
reference keeps it, and a folder never holds parts of two builds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from delf import run_lock
from delf.data import build, metadata, tfrecord
from tests.data_fixtures import make_tiny_gldv2, run_data_script


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return make_tiny_gldv2(tmp_path_factory.mktemp("gldv2_hard"), num_landmarks=3)


def _config(info, output, **extra) -> build.BuildConfig:
  args = {
    "train_csv_path": str(info.root / "train" / "train.csv"),
    "train_clean_csv_path": str(info.root / "train" / "train_clean.csv"),
    "train_directory": str(info.root / "train" / "*" / "*" / "*"),
    "output_directory": str(output),
    "num_shards": 2,
    "generate_train_validation_splits": True,
    "num_workers": 1,
  }
  args.update(extra)
  return build.BuildConfig(**args)


def _snapshot(directory: pathlib.Path) -> dict[str, bytes]:
  """Every visible file's bytes (the hidden lock file records the last run, by design)."""
  return {
    p.name: p.read_bytes()
    for p in sorted(directory.iterdir())
    if p.is_file() and not p.name.startswith(".")
  }


def _visible(directory: pathlib.Path) -> list[str]:
  return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


@pytest.fixture
def good_build(dataset, tmp_path):
  output = tmp_path / "out"
  build.build_image_dataset(_config(dataset, output))
  return output


# ---- item 1: zero usable images ----------------------------------------------------------


@pytest.mark.parametrize("wrong_directory", ["typo", "depth"])
def test_no_matching_image_is_an_error_and_keeps_the_previous_build(
  dataset, good_build, wrong_directory
):
  before = _snapshot(good_build)
  directory = {
    "typo": str(dataset.root / "trian" / "*" / "*" / "*"),
    "depth": str(dataset.root / "train" / "*" / "*"),
  }[wrong_directory]
  with pytest.raises(SystemExit) as info:
    run_data_script(
      "build_image_dataset",
      **{
        **{k: v for k, v in vars(_config(dataset, good_build)).items() if v is not None},
        "train_directory": directory,
        "num_shards": 5,
      },
    )
  message = str(info.value)
  assert "\n" not in message
  assert message.startswith("build_image_dataset: nothing written: no image matches")
  assert directory in message and "the CSV lists" in message and "unchanged" in message
  assert _snapshot(good_build) == before  # bytes of every file, shards included
  assert not [p for p in good_build.iterdir() if p.name.startswith(build.STAGING_PREFIX)]


def test_upper_case_extension_gets_a_hint(tmp_path):
  images = tmp_path / "img"
  images.mkdir()
  Image.new("RGB", (8, 8)).save(images / "abc.JPG", format="JPEG")
  clean = tmp_path / "clean.csv"
  clean.write_text("landmark_id,images\n1,abc\n")
  config = build.BuildConfig(
    train_directory=str(images),
    output_directory=str(tmp_path / "out"),
    train_clean_csv_path=str(clean),
    num_shards=1,
    num_workers=1,
  )
  with pytest.raises(
    build.BuildError, match=r"only \*\.jpg files are read \(found e\.g\. .*abc\.JPG"
  ):
    build.build_image_dataset(config)
  assert _visible(tmp_path / "out") == []


def test_header_only_csv_and_undecodable_images_are_errors(dataset, tmp_path):
  header_only = tmp_path / "train_clean.csv"
  header_only.write_text("landmark_id,images\n")
  with pytest.raises(ValueError, match=r"train_clean\.csv: the CSV has a header but no data rows"):
    build.build_image_dataset(
      _config(dataset, tmp_path / "a", train_clean_csv_path=str(header_only))
    )
  images = tmp_path / "img"
  images.mkdir()
  (images / "x1.jpg").write_bytes(b"not an image at all")
  clean = tmp_path / "clean.csv"
  clean.write_text("landmark_id,images\n4,x1\n")
  with pytest.raises(build.BuildError, match=r"none of the 1 train images found can be decoded"):
    build.build_image_dataset(
      build.BuildConfig(
        train_directory=str(images),
        output_directory=str(tmp_path / "b"),
        train_clean_csv_path=str(clean),
        num_shards=1,
        num_workers=1,
      )
    )
  assert _visible(tmp_path / "a") == [] and _visible(tmp_path / "b") == []


# ---- item 2: one build at a time, never a mix ---------------------------------------------


def test_rebuild_with_other_num_shards_replaces_the_previous_build(dataset, good_build, capsys):
  assert len(list(good_build.glob("train-*-of-00002"))) == 2
  build.build_image_dataset(_config(dataset, good_build, num_shards=3))
  assert "Replaced the previous build" in capsys.readouterr().out
  shards = sorted(p.name for p in good_build.glob("*-of-*"))
  assert shards == [f"{s}-{k:05d}-of-00003" for s in ("train", "validation") for k in range(3)]
  manifest = metadata.read_metadata(str(good_build))["files"]
  assert sorted(manifest) == shards
  # A full-CSV build replaces a clean one: the stale relabeling.csv goes too.
  build.build_image_dataset(_config(dataset, good_build, train_clean_csv_path=None))
  assert not (good_build / "relabeling.csv").exists()
  assert sorted(metadata.read_metadata(str(good_build))["files"]) == sorted(
    p.name for p in good_build.glob("*-of-*")
  )


def test_failed_build_leaves_the_previous_build_untouched(dataset, good_build, monkeypatch):
  before = _snapshot(good_build)
  calls = []
  original = build._write_shard

  def fail_on_third_shard(task):
    calls.append(task.output_path)
    if len(calls) == 3:
      raise OSError(28, "No space left on device")
    return original(task)

  monkeypatch.setattr(build, "_write_shard", fail_on_third_shard)
  with pytest.raises(OSError, match="No space left"):
    build.build_image_dataset(_config(dataset, good_build, num_shards=4))
  assert all(build.STAGING_PREFIX in p for p in calls)  # never written in place
  assert _snapshot(good_build) == before
  assert not [p for p in good_build.iterdir() if p.name.startswith(build.STAGING_PREFIX)]


def test_killed_build_leftovers_are_hidden_and_cleaned(dataset, good_build):
  stale = good_build / (build.STAGING_PREFIX + "killed")
  stale.mkdir()
  (stale / "train-00000-of-00009").write_bytes(b"half a shard")
  # The default train pattern does not see the leftover...
  manifest = metadata.read_metadata(str(good_build))["files"]
  assert sorted(p.name for p in good_build.glob("train*")) == sorted(
    name for name, entry in manifest.items() if entry["split"] == "train"
  )
  # ...and the next build removes it.
  build.build_image_dataset(_config(dataset, good_build))
  assert not stale.exists()


def test_two_builds_into_one_folder_are_refused(dataset, good_build):
  before = _snapshot(good_build)
  held = run_lock.acquire(str(good_build / build.LOCK_FILENAME), "test")
  try:
    with pytest.raises(build.BuildError, match=r"--output_directory=.* is in use by a run"):
      build.build_image_dataset(_config(dataset, good_build, num_shards=3))
  finally:
    held.release()
  assert _snapshot(good_build) == before
  build.build_image_dataset(_config(dataset, good_build, num_shards=3))  # free again


def test_output_directory_that_is_a_file(dataset, tmp_path):
  target = tmp_path / "out"
  target.write_text("a file")
  with pytest.raises(SystemExit, match=r"^build_image_dataset: --output_directory=.*out is a file"):
    run_data_script(
      "build_image_dataset",
      **{k: v for k, v in vars(_config(dataset, target)).items() if v is not None},
    )
  assert target.read_text() == "a file"


# ---- item 3: full-CSV mode and CSV format problems -----------------------------------------


def test_full_csv_id_without_file_is_listed_in_the_skip_list(dataset, tmp_path):
  csv_path = tmp_path / "train.csv"
  text = (dataset.root / "train" / "train.csv").read_text()
  csv_path.write_text(text + "00000000deadbeef,https://example.invalid/x.jpg,5\n")
  summary = build.build_image_dataset(
    _config(
      dataset,
      tmp_path / "out",
      train_clean_csv_path=None,
      train_csv_path=str(csv_path),
      generate_train_validation_splits=False,
    )
  )
  with open(tmp_path / "out" / build.SKIPPED_FILENAME, newline="") as f:
    skipped = {row["id"]: row["reason"] for row in csv.DictReader(f)}
  assert skipped == {"00000000deadbeef": "listed in train.csv but no file found"}
  assert ("00000000deadbeef", "listed in train.csv but no file found", "") in summary.skipped
  assert summary.num_examples["train"] == len(dataset.train_ids)


def _one_image_dir(tmp_path) -> pathlib.Path:
  images = tmp_path / "img"
  images.mkdir(exist_ok=True)
  for image_id in ("a1", "b2"):
    Image.new("RGB", (8, 8), (40, 50, 60)).save(images / f"{image_id}.jpg")
  return images


@pytest.mark.parametrize(
  "mode,content,error",
  [
    ("full", "id,url,landmark_id\na1,u,3\nb2,u,-4\n", r"train\.csv:3: landmark_id -4 is negative"),
    ("full", "id,url,landmark_id\na1,u,3,extra\n", r"train\.csv:2: 4 cells but the header has 3"),
    ("full", "id,url,landmark_id\na1,u\n", r"train\.csv:2: fewer cells than the header"),
    ("full", "id,url,landmark_id\na1,u,x\n", r"train\.csv:2: landmark_id 'x' is not an integer"),
    ("clean", "landmark_id,images\n3,a1 b2,zz\n", r"train\.csv:2: 3 cells but the header has 2"),
    ("clean", "landmark_id,images\n-1,a1\n", r"train\.csv:2: landmark_id -1 is negative"),
  ],
)
def test_malformed_csv_rows_are_refused_with_file_and_line(tmp_path, mode, content, error):
  images = _one_image_dir(tmp_path)
  csv_path = tmp_path / "train.csv"
  csv_path.write_text(content)
  config = build.BuildConfig(
    train_directory=str(images),
    output_directory=str(tmp_path / "out"),
    train_csv_path=str(csv_path),
    train_clean_csv_path=str(csv_path) if mode == "clean" else None,
    num_shards=1,
    num_workers=1,
  )
  with pytest.raises(ValueError, match=error):
    build.build_image_dataset(config)
  assert _visible(tmp_path / "out") == []


def test_byte_order_mark_and_rows_without_images(tmp_path, capsys):
  images = _one_image_dir(tmp_path)
  clean = tmp_path / "clean.csv"
  clean.write_bytes("\ufefflandmark_id,images\n3,a1\n8,\n5,b2\n".encode())
  full = tmp_path / "full.csv"
  full.write_bytes("\ufeffid,url,landmark_id\na1,u,3\nb2,u,5\n".encode())
  out = tmp_path / "out"
  summary = build.build_image_dataset(
    build.BuildConfig(
      train_directory=str(images),
      output_directory=str(out),
      train_clean_csv_path=str(clean),
      num_shards=1,
      num_workers=1,
    )
  )
  printed = capsys.readouterr().out
  assert (
    "1 row(s) of the clean CSV list no image" in printed and "clean.csv:3: landmark_id 8" in printed
  )
  # As in the reference, a landmark without images is not a class.
  assert (out / "relabeling.csv").read_text().splitlines() == ["new_label,old_label", "0,3", "1,5"]
  assert summary.num_classes == 2
  summary = build.build_image_dataset(
    build.BuildConfig(
      train_directory=str(images),
      output_directory=str(out),
      train_csv_path=str(full),
      num_shards=1,
      num_workers=1,
    )
  )
  assert summary.num_examples["train"] == 2 and summary.num_classes == 6


# ---- fidelity: odd files, decoded by the training pipeline's own decoder -------------------


def _odd_images() -> dict[str, tuple[bytes, bool]]:
  """name -> (file bytes, kept by the build?)."""
  rng = np.random.default_rng(0)
  pixels = (rng.random((40, 60, 3)) * 255).astype(np.uint8)
  image = Image.fromarray(pixels)

  def encode(img, fmt, **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()

  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90° clockwise to display"
  plain = encode(image, "JPEG", quality=90)
  animated = io.BytesIO()
  image.save(animated, format="GIF", save_all=True, append_images=[Image.fromarray(255 - pixels)])
  return {
    "a0progressive": (encode(image, "JPEG", progressive=True), True),
    "a1cmyk": (encode(image.convert("CMYK"), "JPEG"), True),
    "a2grayscale": (encode(image.convert("L"), "JPEG"), True),
    "a3exifrotated": (encode(image, "JPEG", exif=exif), True),
    "a4onepixel": (encode(Image.fromarray(pixels[:1, :1]), "JPEG"), True),
    # 27 megapixels: a large camera photo (decoded whole by the pipeline, as in the reference).
    "a5huge": (encode(Image.new("RGB", (6000, 4500), (90, 120, 150)), "JPEG"), True),
    "a6png": (encode(image, "PNG"), True),
    "a7gif": (encode(image, "GIF"), True),
    "b0truncated": (plain[: len(plain) // 2], False),
    "b1webp": (encode(image, "WEBP"), False),  # decode_jpeg makes it 4-D
    "b2animated": (animated.getvalue(), False),
    "b3bmp": (encode(image, "BMP"), False),
    "b4empty": (b"", False),
  }


@pytest.fixture(scope="module")
def odd_build(tmp_path_factory):
  root = tmp_path_factory.mktemp("odd")
  images = root / "img"
  images.mkdir()
  odd = _odd_images()
  for name, (data, _) in odd.items():
    (images / f"{name}.jpg").write_bytes(data)
  clean = root / "clean.csv"
  clean.write_text("landmark_id,images\n" + "".join(f"{n},{name}\n" for n, name in enumerate(odd)))
  summary = build.build_image_dataset(
    build.BuildConfig(
      train_directory=str(images),
      output_directory=str(root / "out"),
      train_clean_csv_path=str(clean),
      num_shards=2,
      num_workers=1,
    )
  )
  return root, odd, summary


def test_odd_images_kept_or_skipped_as_the_training_decoder_decides(odd_build):
  root, odd, summary = odd_build
  records = [
    tfrecord.parse_example(r)
    for path in sorted((root / "out").glob("train-*"))
    for r in tfrecord.read_tfrecord(path)
  ]
  kept = {r["image/id"][0].decode(): r for r in records}
  assert sorted(kept) == sorted(name for name, (_, keep) in odd.items() if keep)
  skipped = {image_id: reason for image_id, reason, _ in summary.skipped}
  assert sorted(skipped) == sorted(name for name, (_, keep) in odd.items() if not keep)
  assert "truncated JPEG" in skipped["b0truncated"]
  assert "4-D" in skipped["b1webp"] and "empty file" in skipped["b4empty"]
  for name, record in kept.items():
    assert record["image/encoded"] == [odd[name][0]]  # original bytes, not re-encoded
  sizes = {name: (r["image/height"][0], r["image/width"][0]) for name, r in kept.items()}
  assert sizes["a3exifrotated"] == (40, 60)  # stored orientation, as TensorFlow decodes it
  assert sizes["a4onepixel"] == (1, 1) and sizes["a5huge"] == (4500, 6000)
  assert sizes["a6png"] == (40, 60)


@pytest.mark.parametrize("augmentation", [False, True])
def test_every_kept_image_decodes_in_the_training_pipeline(odd_build, augmentation):
  import tensorflow as tf

  from delf.data.pipeline import create_dataset

  root, odd, _ = odd_build
  expected = sorted(name for name, (_, keep) in odd.items() if keep)
  dataset = create_dataset(
    str(root / "out" / "train-*"),
    image_size=32,
    batch_size=4,
    augmentation=augmentation,
    include_ids=True,
    num_parallel_calls=1,
  )
  seen = set()
  for images, _, ids in dataset.take(3 * len(expected)):  # the stream repeats and shuffles
    seen.update(i.decode() for i in ids.numpy())
    assert images.shape == (4, 32, 32, 3)
    assert bool(tf.reduce_all(tf.math.is_finite(images)))
    assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) < 1.0
    if len(seen) == len(expected):
      break
  assert sorted(seen) == expected


def test_build_metadata_describes_the_odd_build(odd_build):
  root, odd, summary = odd_build
  meta = json.loads((root / "out" / metadata.METADATA_FILENAME).read_text())
  assert meta["num_examples"]["train"] == sum(keep for _, keep in odd.values())
  assert sum(e["examples"] for e in meta["files"].values()) == meta["num_examples"]["train"]
  assert os.path.basename(summary.metadata_path) == metadata.METADATA_FILENAME
