"""extract_features.py --output_store: the same features as .delf files, in a store."""

from __future__ import annotations

import numpy as np
import pytest

from delf import feature_io, feature_store
from tests import cli_harness

pytest.importorskip("tensorflow")

from tests.test_extraction_cli import _images, _write_config, model_path  # noqa: F401


def test_store_holds_what_the_files_hold_and_shards_resume(tmp_path, model_path, capsys):  # noqa: F811
  images = _images(tmp_path, [(40, 30), (20, 64), (24, 24)])
  listing = tmp_path / "list.txt"
  listing.write_text("\n".join(images) + "\n")
  config = _write_config(tmp_path / "c.pbtxt", model_path, max_image_size=32)
  common = dict(config_path=config, list_images_path=str(listing))
  assert (
    cli_harness.run_script("extract_features", output_dir=str(tmp_path / "files"), **common) == 0
  )
  for shard in range(2):
    assert (
      cli_harness.run_script(
        "extract_features",
        output_store=str(tmp_path / "store"),
        num_shards=2,
        shard_index=shard,
        **common,
      )
      == 0
    )
  store = feature_store.FeatureStore(tmp_path / "store")
  assert sorted(store.ids) == ["img_0", "img_1", "img_2"] and not store.has_global
  for image_id in store.ids:
    expected = feature_io.ReadFromFile(str(tmp_path / "files" / f"{image_id}.delf"))
    for a, b in zip(store.local_features(image_id).as_tuple(), expected):
      np.testing.assert_array_equal(a, b)
  capsys.readouterr()
  assert (
    cli_harness.run_script("extract_features", output_store=str(tmp_path / "store"), **common) == 1
  )
  assert "written with --num_shards=2; resume or extend it with the same sharding" in (
    capsys.readouterr().err
  )
