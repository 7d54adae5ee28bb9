"""Reads and writes ``DatumProto`` files (.datum, .delg_global, PCA files).

Behaviour follows the reference (inference.md §3.2, KB-44): float16/32/64
arrays are stored as a float list (cast to float32), uint8/16/32/64 arrays as
a uint32 list; any other dtype is rejected. Note the argument order
``WriteToFile(data, path)``, the opposite of ``feature_io``.
"""

from __future__ import annotations

import numpy as np

from delf import atomic_io
from delf.protos import datum_pb2

_FLOAT_TYPES = (np.float16, np.float32, np.float64)
_UINT_TYPES = (np.uint8, np.uint16, np.uint32, np.uint64)


def ArrayToDatum(arr: np.ndarray) -> datum_pb2.DatumProto:
  """Converts a NumPy array to a ``DatumProto``."""
  arr = np.asarray(arr)
  datum = datum_pb2.DatumProto()
  if arr.dtype.type in _FLOAT_TYPES:
    datum.float_list.value.extend(arr.astype(np.float32).ravel())
  elif arr.dtype.type in _UINT_TYPES:
    datum.uint32_list.value.extend(arr.astype(np.uint32).ravel())
  else:
    raise ValueError(f"Unsupported array type: {arr.dtype}")
  datum.shape.dim.extend(arr.shape)
  return datum


def DatumToArray(datum: datum_pb2.DatumProto) -> np.ndarray:
  """Converts a ``DatumProto`` to a float32 or uint32 NumPy array."""
  shape = tuple(datum.shape.dim)
  if datum.HasField("float_list"):
    return np.asarray(datum.float_list.value, dtype=np.float32).reshape(shape)
  if datum.HasField("uint32_list"):
    return np.asarray(datum.uint32_list.value, dtype=np.uint32).reshape(shape)
  raise ValueError("Input DatumProto does not have float_list or uint32_list")


def ArraysToDatumPair(arr_1: np.ndarray, arr_2: np.ndarray) -> datum_pb2.DatumPairProto:
  """Converts two arrays to a ``DatumPairProto``."""
  pair = datum_pb2.DatumPairProto()
  pair.first.CopyFrom(ArrayToDatum(arr_1))
  pair.second.CopyFrom(ArrayToDatum(arr_2))
  return pair


def DatumPairToArrays(pair: datum_pb2.DatumPairProto) -> tuple[np.ndarray, np.ndarray]:
  """Converts a ``DatumPairProto`` to two arrays."""
  return DatumToArray(pair.first), DatumToArray(pair.second)


def SerializeToString(arr: np.ndarray) -> bytes:
  return ArrayToDatum(arr).SerializeToString()


def SerializePairToString(arr_1: np.ndarray, arr_2: np.ndarray) -> bytes:
  return ArraysToDatumPair(arr_1, arr_2).SerializeToString()


def ParseFromString(string: bytes) -> np.ndarray:
  datum = datum_pb2.DatumProto()
  datum.ParseFromString(string)
  return DatumToArray(datum)


def ParsePairFromString(string: bytes) -> tuple[np.ndarray, np.ndarray]:
  pair = datum_pb2.DatumPairProto()
  pair.ParseFromString(string)
  return DatumPairToArrays(pair)


def ReadFromFile(file_path: str) -> np.ndarray:
  """Reads a ``DatumProto`` file into a NumPy array."""
  with open(file_path, "rb") as f:
    return ParseFromString(f.read())


def ReadPairFromFile(file_path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads a ``DatumPairProto`` file into two NumPy arrays."""
  with open(file_path, "rb") as f:
    return ParsePairFromString(f.read())


def WriteToFile(data: np.ndarray, file_path: str) -> None:
  """Writes an array to a ``DatumProto`` file (atomically)."""
  atomic_io.write_bytes_atomic(file_path, SerializeToString(data))


def WritePairToFile(arr_1: np.ndarray, arr_2: np.ndarray, file_path: str) -> None:
  """Writes two arrays to a ``DatumPairProto`` file (atomically)."""
  atomic_io.write_bytes_atomic(file_path, SerializePairToString(arr_1, arr_2))
