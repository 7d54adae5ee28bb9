"""Reads and writes local features (``DelfFeatures``: .delf / .delg_local).

Behaviour follows the reference (inference.md §3.1, KB-42, KB-44):
locations are (y, x) rows; the proto stores ``x`` and ``y`` separately;
readers return float64 arrays; an image without features is a zero-byte file
and reads back as five empty arrays. Note the argument order
``WriteToFile(path, ...)``, the opposite of ``datum_io``.
"""

from __future__ import annotations

import numpy as np

from delf import atomic_io, datum_io
from delf.protos import feature_pb2


def ArraysToDelfFeatures(
  locations: np.ndarray,
  scales: np.ndarray,
  descriptors: np.ndarray,
  attention: np.ndarray,
  orientations: np.ndarray | None = None,
) -> feature_pb2.DelfFeatures:
  """Converts feature arrays to a ``DelfFeatures`` message.

  Args:
    locations: [N, 2] (y, x) keypoint locations.
    scales: [N] feature scales.
    descriptors: [N, D] descriptors.
    attention: [N] attention scores.
    orientations: [N] orientations; zeros if None.
  """
  num_features = len(attention)
  if orientations is None:
    orientations = np.zeros([num_features])
  if not (
    num_features
    == np.shape(locations)[0]
    == len(scales)
    == np.shape(descriptors)[0]
    == len(orientations)
  ):
    raise ValueError(
      "Inconsistent feature counts: "
      f"attention {num_features}, locations {np.shape(locations)[0]}, scales {len(scales)}, "
      f"descriptors {np.shape(descriptors)[0]}, orientations {len(orientations)}"
    )
  delf_features = feature_pb2.DelfFeatures()
  for i in range(num_features):
    feature = delf_features.feature.add()
    feature.y = locations[i, 0]
    feature.x = locations[i, 1]
    feature.scale = scales[i]
    feature.orientation = orientations[i]
    feature.strength = attention[i]
    feature.descriptor.CopyFrom(datum_io.ArrayToDatum(np.asarray(descriptors[i])))
  return delf_features


def DelfFeaturesToArrays(
  delf_features: feature_pb2.DelfFeatures,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Converts a ``DelfFeatures`` message to five float64 arrays.

  Returns:
    (locations [N, 2] as (y, x), scales [N], descriptors [N, D], attention [N],
    orientations [N]); five empty arrays if there is no feature.
  """
  features = delf_features.feature
  num_features = len(features)
  if num_features == 0:
    return (np.array([]), np.array([]), np.array([]), np.array([]), np.array([]))
  locations = np.array([(f.y, f.x) for f in features], dtype=np.float64)
  scales = np.array([f.scale for f in features], dtype=np.float64)
  attention = np.array([f.strength for f in features], dtype=np.float64)
  orientations = np.array([f.orientation for f in features], dtype=np.float64)
  descriptors = _packed_float_descriptors(features)
  if descriptors is None:
    # D is taken from the first feature, as the reference does.
    descriptor_dim = len(datum_io.DatumToArray(features[0].descriptor))
    descriptors = np.empty([num_features, descriptor_dim])
    for i, feature in enumerate(features):
      descriptors[i] = datum_io.DatumToArray(feature.descriptor)
  return locations, scales, descriptors, attention, orientations


def _packed_float_descriptors(features) -> np.ndarray | None:
  """[N, D] float64 descriptors read as one block of bytes, or None to use the slow path.

  Converting 1000 repeated-float fields one by one dominates reading a .delf file.
  Each descriptor's ``FloatList`` serialises to the same header (field 1, packed,
  4·D bytes) followed by the raw little-endian floats, so the concatenation is an
  [N, header + 4·D] byte matrix. Anything else (uint32 or empty descriptors,
  differing sizes, shapes other than [D]) takes the general per-feature path.
  """
  first = features[0].descriptor
  if not first.HasField("float_list") or list(first.shape.dim) != [len(first.float_list.value)]:
    return None
  dim = len(first.float_list.value)
  if dim == 0:
    return None
  blob = b"".join(f.descriptor.float_list.SerializeToString() for f in features)
  header = first.float_list.SerializeToString()[: -4 * dim]
  row_bytes = len(header) + 4 * dim
  if len(blob) != row_bytes * len(features):
    return None
  rows = np.frombuffer(blob, dtype=np.uint8).reshape(len(features), row_bytes)
  if np.any(rows[:, : len(header)] != np.frombuffer(header, dtype=np.uint8)):
    return None
  if any(list(f.descriptor.shape.dim) != [dim] for f in features):
    return None
  return rows[:, len(header) :].copy().view("<f4").astype(np.float64)


def SerializeToString(
  locations: np.ndarray,
  scales: np.ndarray,
  descriptors: np.ndarray,
  attention: np.ndarray,
  orientations: np.ndarray | None = None,
) -> bytes:
  return ArraysToDelfFeatures(
    locations, scales, descriptors, attention, orientations
  ).SerializeToString()


def ParseFromString(string: bytes) -> tuple[np.ndarray, ...]:
  delf_features = feature_pb2.DelfFeatures()
  delf_features.ParseFromString(string)
  return DelfFeaturesToArrays(delf_features)


def ReadFromFile(file_path: str) -> tuple[np.ndarray, ...]:
  """Reads a .delf file: (locations, scales, descriptors, attention, orientations)."""
  with open(file_path, "rb") as f:
    return ParseFromString(f.read())


def WriteToFile(
  file_path: str,
  locations: np.ndarray,
  scales: np.ndarray,
  descriptors: np.ndarray,
  attention: np.ndarray,
  orientations: np.ndarray | None = None,
) -> None:
  """Writes local features to a .delf file (atomically)."""
  atomic_io.write_bytes_atomic(
    file_path, SerializeToString(locations, scales, descriptors, attention, orientations)
  )
