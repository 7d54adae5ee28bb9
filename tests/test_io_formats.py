"""File formats: golden bytes of the spec, reference test vectors, reference-written files."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from delf import box_io, datum_io, feature_io

# inference.md §1.6: what the reference writers produce.
GOLDEN_DATUM_FLOAT_1D = "0a030a0103120e0a0c0000803f0000004000004040"
GOLDEN_DATUM_FLOAT_3X2 = "0a040a020302121a0a18cdcc8c3fcdcc0c4033335340cdcc8c400000b0403333d340"
GOLDEN_DATUM_UINT32 = "0a040a0202021a080a06ff01000aac02"
GOLDEN_ONE_FEATURE = (
  "0a2c0a110a030a0102120a0a080000003f000000bf150000a0411d0000204125000000402d000000003500001643"
)
GOLDEN_ONE_BOX = "0a1b0d00000000150000803f1d0000004025000040402d0000003f3000"


class TestGoldenBytes:
  def test_datum_float_1d(self):
    data = datum_io.SerializeToString(np.array([1, 2, 3], dtype=np.float32))
    assert data.hex() == GOLDEN_DATUM_FLOAT_1D

  def test_datum_float_3x2(self):
    array = np.array([[1.1, 2.2], [3.3, 4.4], [5.5, 6.6]], dtype=np.float32)
    assert datum_io.SerializeToString(array).hex() == GOLDEN_DATUM_FLOAT_3X2

  def test_datum_float64_is_stored_as_float32(self):
    array = np.array([[1.1, 2.2], [3.3, 4.4], [5.5, 6.6]], dtype=np.float64)
    assert datum_io.SerializeToString(array).hex() == GOLDEN_DATUM_FLOAT_3X2

  def test_datum_uint32(self):
    array = np.array([[255, 0], [10, 300]], dtype=np.uint32)
    assert datum_io.SerializeToString(array).hex() == GOLDEN_DATUM_UINT32

  def test_one_feature(self):
    data = feature_io.SerializeToString(
      locations=np.array([[10.0, 20.0]]),
      scales=np.array([2.0]),
      descriptors=np.array([[0.5, -0.5]]),
      attention=np.array([150.0]),
    )
    assert data.hex() == GOLDEN_ONE_FEATURE

  def test_zero_features_is_empty(self):
    empty = np.array([])
    assert feature_io.SerializeToString(empty, empty, empty, empty) == b""

  def test_one_box(self):
    data = box_io.SerializeToString(
      np.array([[0.0, 1.0, 2.0, 3.0]]), np.array([0.5]), np.array([0], dtype=np.int32)
    )
    assert data.hex() == GOLDEN_ONE_BOX


class TestDatumIo:
  """inference.md §8.2."""

  @pytest.mark.parametrize(
    "dtype", [np.uint16, np.uint32, np.uint64, np.float16, np.float32, np.float64]
  )
  @pytest.mark.parametrize("shape", [(3, 3), (2, 3, 4)])
  def test_round_trip(self, dtype, shape):
    array = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    parsed = datum_io.ParseFromString(datum_io.SerializeToString(array))
    assert parsed.shape == shape
    assert np.array_equal(parsed, array)

  def test_float_comes_back_float32_and_uint_as_uint32(self):
    assert datum_io.ParseFromString(datum_io.SerializeToString(np.ones(2))).dtype == np.float32
    uint8 = np.ones(2, dtype=np.uint8)
    assert datum_io.ParseFromString(datum_io.SerializeToString(uint8)).dtype == np.uint32

  @pytest.mark.parametrize("dtype", [int, np.int8, np.int32, np.int64, bool])
  def test_signed_and_other_types_are_rejected(self, dtype):
    with pytest.raises(ValueError, match="Unsupported array type"):
      datum_io.ArrayToDatum(np.arange(4).astype(dtype))

  def test_datum_without_payload_is_rejected(self):
    from delf import datum_pb2

    with pytest.raises(ValueError, match="float_list or uint32_list"):
      datum_io.DatumToArray(datum_pb2.DatumProto())

  def test_file_round_trip(self, tmp_path):
    array = np.array(
      [[[-1, 125, -2.5], [14.5, 3.5, 0]], [[20, 0, 30], [25.5, 36, 42]]], dtype=np.float32
    )
    path = str(tmp_path / "test.datum")
    datum_io.WriteToFile(array, path)
    assert np.array_equal(datum_io.ReadFromFile(path), array)
    assert os.listdir(tmp_path) == ["test.datum"]  # No temporary file left behind.

  def test_pair_file_round_trip(self, tmp_path):
    first = np.array(
      [[[-1, 125, -2.5], [14.5, 3.5, 0]], [[20, 0, 30], [25.5, 36, 42]]], dtype=np.float32
    )
    second = np.array(
      [[[255, 0, 5], [10, 300, 0]], [[20, 1, 100], [255, 360, 420]]], dtype=np.uint32
    )
    path = str(tmp_path / "test.datum_pair")
    datum_io.WritePairToFile(first, second, path)
    read_first, read_second = datum_io.ReadPairFromFile(path)
    assert np.array_equal(read_first, first)
    assert np.array_equal(read_second, second)

  def test_failed_write_keeps_the_old_file(self, tmp_path):
    path = str(tmp_path / "test.datum")
    datum_io.WriteToFile(np.ones(3, np.float32), path)
    with pytest.raises(ValueError):
      datum_io.WriteToFile(np.arange(3), path)
    assert np.array_equal(datum_io.ReadFromFile(path), np.ones(3))
    assert os.listdir(tmp_path) == ["test.datum"]


def _feature_arrays():
  """inference.md §8.1 data."""
  locations = np.arange(8, dtype=np.float32).reshape(4, 2)
  scales = np.arange(4, dtype=np.float32)
  attention = np.arange(4, dtype=np.float32)
  orientations = np.arange(4, dtype=np.float32)
  descriptors = np.zeros([4, 1024])
  descriptors[0] = np.arange(1024)
  descriptors[2] = np.ones(1024)
  descriptors[3] = -np.ones(1024)
  return locations, scales, descriptors, attention, orientations


class TestFeatureIo:
  """inference.md §8.1."""

  def test_round_trip(self):
    arrays = _feature_arrays()
    parsed = feature_io.ParseFromString(feature_io.SerializeToString(*arrays))
    for expected, actual in zip(arrays, parsed, strict=True):
      assert actual.dtype == np.float64
      assert np.array_equal(actual, expected)

  def test_without_orientations_gives_zeros(self):
    locations, scales, descriptors, attention, _ = _feature_arrays()
    parsed = feature_io.ParseFromString(
      feature_io.SerializeToString(locations, scales, descriptors, attention)
    )
    assert np.array_equal(parsed[4], np.zeros(4))

  def test_file_round_trip(self, tmp_path):
    arrays = _feature_arrays()
    path = str(tmp_path / "test.delf")
    feature_io.WriteToFile(path, *arrays)
    for expected, actual in zip(arrays, feature_io.ReadFromFile(path), strict=True):
      assert np.array_equal(actual, expected)

  def test_empty(self, tmp_path):
    path = str(tmp_path / "test.delf")
    empty = np.array([])
    feature_io.WriteToFile(path, empty, empty, empty, empty, empty)
    assert os.path.getsize(path) == 0
    result = feature_io.ReadFromFile(path)
    assert len(result) == 5
    for array in result:
      assert np.array_equal(array, np.array([]))

  def test_uint32_descriptors_take_the_general_path(self):
    # Old writers may store descriptors of other kinds; the block reader must not apply.
    from delf import feature_pb2

    message = feature_pb2.DelfFeatures()
    for i in range(3):
      feature = message.feature.add()
      feature.y, feature.x, feature.strength = float(i), 2.0 * i, 10.0 - i
      feature.descriptor.CopyFrom(datum_io.ArrayToDatum(np.array([i, 300, 7], np.uint32)))
    locations, _, descriptors, attention, _ = feature_io.DelfFeaturesToArrays(message)
    assert descriptors.dtype == np.float64
    np.testing.assert_array_equal(descriptors, [[0, 300, 7], [1, 300, 7], [2, 300, 7]])
    np.testing.assert_array_equal(locations, [[0, 0], [1, 2], [2, 4]])
    np.testing.assert_array_equal(attention, [10, 9, 8])

  def test_inconsistent_counts_are_rejected(self):
    locations, scales, descriptors, attention, _ = _feature_arrays()
    with pytest.raises(ValueError, match="Inconsistent feature counts"):
      feature_io.SerializeToString(locations, scales[:3], descriptors, attention)


class TestBoxIo:
  """inference.md §8.3."""

  def _arrays(self):
    return (
      np.arange(24, dtype=np.float32).reshape(6, 4),
      np.arange(6, dtype=np.float32),
      np.arange(6, dtype=np.int32),
    )

  def test_round_trip(self):
    arrays = self._arrays()
    parsed = box_io.ParseFromString(box_io.SerializeToString(*arrays))
    for expected, actual in zip(arrays, parsed, strict=True):
      assert actual.dtype == np.float64
      assert np.array_equal(actual, expected)

  def test_file_round_trip(self, tmp_path):
    arrays = self._arrays()
    path = str(tmp_path / "test.boxes")
    box_io.WriteToFile(path, *arrays)
    for expected, actual in zip(arrays, box_io.ReadFromFile(path), strict=True):
      assert np.array_equal(actual, expected)

  def test_empty(self, tmp_path):
    path = str(tmp_path / "test.box")
    box_io.WriteToFile(path, np.array([]), np.array([]), np.array([]))
    result = box_io.ReadFromFile(path)
    assert len(result) == 3
    for array in result:
      assert np.array_equal(array, np.array([]))


def _sha256_float32(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


@pytest.mark.parametrize("name", ["delf_local_query_00.delf", "delg_local_query_00.delf"])
def test_reference_written_local_features(interop_dir, name):
  expected = json.loads((interop_dir / f"{name}.json").read_text())
  path = interop_dir / name
  locations, scales, descriptors, attention, orientations = feature_io.ReadFromFile(str(path))
  assert descriptors.shape == (expected["num_features"], expected["descriptor_dim"])
  for array in (locations, scales, descriptors, attention, orientations):
    assert array.dtype == np.float64
  np.testing.assert_array_equal(locations[:3], expected["first3_locations_yx"])
  np.testing.assert_array_equal(scales[:3], expected["first3_scales"])
  np.testing.assert_array_equal(attention[:3], expected["first3_attention"])
  np.testing.assert_array_equal(orientations[:3], expected["first3_orientations"])
  assert _sha256_float32(descriptors) == expected["descriptors_float32_le_c_order_sha256"]
  assert descriptors.sum() == pytest.approx(expected["descriptors_sum"], rel=1e-9)
  assert locations.sum() == pytest.approx(expected["locations_sum"], rel=1e-12)
  assert attention.sum() == pytest.approx(expected["attention_sum"], rel=1e-12)
  norms = np.linalg.norm(descriptors.astype(np.float32), axis=1)
  np.testing.assert_allclose(
    [norms.min(), norms.max()], expected["descriptor_row_l2_norm_min_max"], atol=1e-6
  )
  np.testing.assert_allclose(
    np.unique(np.round(scales, 6)), expected["scales_sorted_unique"], atol=1e-6
  )
  # Writing back what we read reproduces the reference file byte for byte.
  rewritten = feature_io.SerializeToString(locations, scales, descriptors, attention, orientations)
  assert hashlib.sha256(rewritten).hexdigest() == expected["file_sha256"]


def test_reference_written_global_descriptor(interop_dir):
  expected = json.loads((interop_dir / "delf_global_query_00.global.json").read_text())
  path = interop_dir / "delf_global_query_00.global"
  descriptor = datum_io.ReadFromFile(str(path))
  assert list(descriptor.shape) == expected["shape"]
  assert descriptor.dtype == np.float32
  np.testing.assert_array_equal(descriptor[:5], np.float32(expected["first5"]))
  assert _sha256_float32(descriptor) == expected["float32_le_sha256"]
  assert float(np.linalg.norm(descriptor.astype(np.float64))) == pytest.approx(1.0, abs=1e-6)
  assert (
    hashlib.sha256(datum_io.SerializeToString(descriptor)).hexdigest() == (expected["file_sha256"])
  )


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
  old_umask = os.umask(0o022)
  try:
    path = tmp_path / "test.datum"
    datum_io.WriteToFile(np.ones(3, np.float32), str(path))
    assert path.stat().st_mode & 0o777 == 0o644
  finally:
    os.umask(old_umask)
