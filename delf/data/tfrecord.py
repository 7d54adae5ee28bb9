"""TFRecord files of ``tf.train.Example`` without importing TensorFlow.

The dataset build runs in many worker processes; importing TensorFlow in each
costs ~4.5 s and ~600 MB. A TFRecord file is simple framing around serialised
protobufs, and a ``tf.train.Example`` with scalar features is a few nested
length-delimited fields, so both are written here directly:

* record = ``uint64 length (LE)``, ``uint32 masked crc32c(length)``, ``data``,
  ``uint32 masked crc32c(data)``; mask = ``((crc >> 15) | (crc << 17)) + 0xa282ead8``.
* ``Example{features: Features{feature: map<string, Feature>}}``, ``Feature`` =
  ``bytes_list`` (1), ``float_list`` (2) or ``int64_list`` (3, packed varints).

TensorFlow itself serialises the feature map in a hash order that changes from
process to process; we write the map entries sorted by key, which is exactly
TensorFlow's ``SerializeToString(deterministic=True)``, so shards are
reproducible byte for byte. Readers cannot tell the difference (map order
carries no meaning in protobuf).

CRC-32C is not in the standard library; ``crc32c`` below computes it with NumPy:
the CRC is linear, so each block's CRC is the XOR of per-position byte
contributions (one table gather), and block CRCs are combined pairwise with
precomputed "append n zero bytes" operators.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from delf import atomic_io

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected.
_MASK_DELTA = 0xA282EAD8
_BLOCK = 256  # Bytes per block of the vectorised CRC.
_SMALL = 64  # Below this many bytes the plain table loop is faster.


def _make_table() -> np.ndarray:
  table = np.zeros(256, dtype=np.uint32)
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
    table[i] = crc
  return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]
_POSITION_OFFSETS = (np.arange(_BLOCK, dtype=np.intp) * 256)[None, :]


def _crc_raw_small(data: bytes | memoryview, crc: int) -> int:
  table = _TABLE_LIST
  for byte in bytes(data):
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc


def _apply_operator(columns: list[int], value: int) -> int:
  out = 0
  bit = 0
  while value:
    if value & 1:
      out ^= columns[bit]
    value >>= 1
    bit += 1
  return out


@functools.cache
def _zeros_operator_tables(num_bytes: int) -> np.ndarray:
  """Tables [4, 256] of the linear map "append ``num_bytes`` zero bytes" on a raw CRC."""
  # The map is linear over GF(2); keep it as the images of the 32 basis bits.
  # One zero bit shifts right and folds the polynomial in when bit 0 was set.
  one_bit = [_POLY if i == 0 else 1 << (i - 1) for i in range(32)]
  result = [1 << i for i in range(32)]  # identity
  power, bits = one_bit, num_bytes * 8
  while bits:  # square-and-multiply; powers of one map commute
    if bits & 1:
      result = [_apply_operator(power, c) for c in result]
    power = [_apply_operator(power, c) for c in power]
    bits >>= 1
  tables = np.zeros((4, 256), dtype=np.uint32)
  for t in range(4):
    for v in range(256):
      tables[t, v] = _apply_operator(result, v << (8 * t))
  return tables


def _apply_tables(tables: np.ndarray, crcs: np.ndarray) -> np.ndarray:
  return (
    tables[0][crcs & 0xFF]
    ^ tables[1][(crcs >> 8) & 0xFF]
    ^ tables[2][(crcs >> 16) & 0xFF]
    ^ tables[3][crcs >> 24]
  )


@functools.cache
def _position_tables() -> np.ndarray:
  """Flat [_BLOCK * 256] table: raw CRC of byte b followed by r zero bytes, at r * 256 + b."""
  tables = np.zeros((_BLOCK, 256), dtype=np.uint32)
  tables[0] = _TABLE
  for r in range(1, _BLOCK):
    previous = tables[r - 1]
    tables[r] = _TABLE[previous & 0xFF] ^ (previous >> 8)
  return tables[::-1].reshape(-1).copy()  # row r now holds "r zero bytes follow" for r = L-1-j


def crc32c(data: bytes | bytearray | memoryview) -> int:
  """CRC-32C (Castagnoli) of ``data``, as used by TFRecord framing."""
  n = len(data)
  if n < _SMALL:
    return _crc_raw_small(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
  # Starting the register at ~0 equals XOR-ing ~0 into the first 4 bytes and
  # starting at 0; with a zero start, leading zero bytes do not change the CRC,
  # so the data is left-padded to whole blocks. A block's CRC is the XOR of the
  # contributions of its bytes (the CRC is linear), looked up per position.
  num_blocks = -(-n // _BLOCK)
  buffer = np.zeros(num_blocks * _BLOCK, dtype=np.uint8)
  buffer[-n:] = np.frombuffer(data, dtype=np.uint8)
  buffer[-n : -n + 4] ^= 0xFF
  index = buffer.reshape(num_blocks, _BLOCK).astype(np.intp) + _POSITION_OFFSETS
  crcs = np.bitwise_xor.reduce(_position_tables()[index], axis=1)
  length = _BLOCK
  while crcs.size > 1:
    if crcs.size % 2:  # a leading all-zero block changes nothing
      crcs = np.concatenate([np.zeros(1, dtype=np.uint32), crcs])
    crcs = _apply_tables(_zeros_operator_tables(length), crcs[0::2]) ^ crcs[1::2]
    length *= 2
  return int(crcs[0]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
  """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
  header = struct.pack("<Q", len(data))
  return b"".join(
    (
      header,
      struct.pack("<I", masked_crc32c(header)),
      data,
      struct.pack("<I", masked_crc32c(data)),
    )
  )


# --- tf.train.Example serialisation -------------------------------------------------


def _varint(value: int) -> bytes:
  if value < 0:
    value += 1 << 64
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
  return _varint((field << 3) | 2) + _varint(len(payload)) + payload


FeatureValue = bytes | str | int | list


def _feature(value: FeatureValue) -> bytes:
  values = value if isinstance(value, list) else [value]
  if values and all(isinstance(v, (bytes, str)) for v in values):
    items = b"".join(
      _length_delimited(1, v.encode("utf-8") if isinstance(v, str) else v) for v in values
    )
    return _length_delimited(1, items)  # bytes_list
  if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
    packed = b"".join(_varint(int(v)) for v in values)
    inner = _length_delimited(1, packed) if values else b""
    return _length_delimited(3, inner)  # int64_list
  raise TypeError(f"unsupported feature value {value!r}: use bytes, str or int")


def serialize_example(features: Mapping[str, FeatureValue]) -> bytes:
  """Serialises a ``tf.train.Example`` (keys sorted, as ``deterministic=True`` does)."""
  entries = b"".join(
    _cached_entry(key, value)
    if isinstance(value, int) or (isinstance(value, bytes) and len(value) <= 8)
    else _entry(key, value)
    for key, value in sorted(features.items())
  )
  return _length_delimited(1, entries)


def _entry(key: str, value: FeatureValue) -> bytes:
  """One ``map<string, Feature>`` entry: key (1) and value (2)."""
  key_field = _length_delimited(1, key.encode("utf-8"))
  return _length_delimited(1, key_field + _length_delimited(2, _feature(value)))


# Heights, widths, labels and constant features repeat across millions of records.
_cached_entry = functools.lru_cache(maxsize=65536)(_entry)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    byte = data[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    shift += 7
    if byte < 0x80:
      return result, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, object]]:
  pos = 0
  while pos < len(data):
    key, pos = _read_varint(data, pos)
    field, wire = key >> 3, key & 7
    if wire == 2:
      size, pos = _read_varint(data, pos)
      yield field, wire, data[pos : pos + size]
      pos += size
    elif wire == 0:
      value, pos = _read_varint(data, pos)
      yield field, wire, value
    elif wire == 5:
      yield field, wire, data[pos : pos + 4]
      pos += 4
    elif wire == 1:
      yield field, wire, data[pos : pos + 8]
      pos += 8
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")


def parse_example(data: bytes) -> dict[str, list]:
  """Parses a serialised ``tf.train.Example`` into ``{key: [values]}`` (bytes/int/float)."""
  result: dict[str, list] = {}
  for field, _, features in _fields(data):
    if field != 1:
      continue
    for entry_field, _, entry in _fields(features):
      if entry_field != 1:
        continue
      key, values = "", []
      for f, _, v in _fields(entry):
        if f == 1:
          key = bytes(v).decode("utf-8")
        elif f == 2:
          values = _feature_values(v)
      result[key] = values
  return result


def _feature_values(feature: bytes) -> list:
  values: list = []
  for kind, _, payload in _fields(feature):
    for f, wire, v in _fields(payload):
      if f != 1:
        continue
      if kind == 1:
        values.append(bytes(v))
      elif kind == 3:
        if wire == 2:  # packed
          pos = 0
          while pos < len(v):
            item, pos = _read_varint(v, pos)
            values.append(item - (1 << 64) if item >= 1 << 63 else item)
        else:
          values.append(v - (1 << 64) if v >= 1 << 63 else v)
      elif kind == 2:
        fmt = f"<{len(v) // 4}f"
        values.extend(struct.unpack(fmt, v) if wire == 2 else struct.unpack("<f", v))
  return values


# --- files ----------------------------------------------------------------------------


def write_tfrecord(path: str | os.PathLike, records: Iterable[bytes]) -> int:
  """Writes serialised records to ``path`` atomically; returns how many were written."""
  count = 0
  with atomic_io.atomic_output(path, "wb") as f:
    for record in records:
      f.write(frame_record(record))
      count += 1
  return count


def read_tfrecord(path: str | os.PathLike, verify: bool = True) -> Iterator[bytes]:
  """Yields the records of an uncompressed TFRecord file, checking both CRCs."""
  with open(path, "rb") as f:
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        raise ValueError(f"{path}: truncated TFRecord header")
      (length,) = struct.unpack("<Q", header[:8])
      (length_crc,) = struct.unpack("<I", header[8:])
      if verify and masked_crc32c(header[:8]) != length_crc:
        raise ValueError(f"{path}: corrupt TFRecord length CRC")
      data = f.read(length)
      footer = f.read(4)
      if len(data) < length or len(footer) < 4:
        raise ValueError(f"{path}: truncated TFRecord")
      if verify and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
        raise ValueError(f"{path}: corrupt TFRecord data CRC")
      yield data


def _record_problem(f, position: int, size: int, check_data: bool) -> tuple[str | None, int]:
  """Checks the record at ``position``; returns (problem or None, next position)."""
  f.seek(position)
  header = f.read(12)
  if len(header) < 12:
    return f"truncated record header at byte {position}", size
  (length,) = struct.unpack("<Q", header[:8])
  if masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
    return f"corrupted record (length checksum) at byte {position}", size
  end = position + 12 + length + 4
  if end > size:
    return f"truncated record at byte {position} (needs {end - size} more bytes)", size
  if check_data:
    data = f.read(length)
    if masked_crc32c(data) != struct.unpack("<I", f.read(4))[0]:
      return f"corrupted record (data checksum) at byte {position}", end
  return None, end


def count_records(path: str | os.PathLike) -> int:
  """Number of records, found by walking the length headers (the data is not read).

  Raises:
    ValueError: the framing is damaged (names the file and the byte offset).
  """
  size = os.path.getsize(path)
  count = position = 0
  with open(path, "rb") as f:
    while position < size:
      problem, position = _record_problem(f, position, size, check_data=False)
      if problem:
        raise ValueError(f"{path}: {problem}")
      count += 1
  return count


def find_damage(path: str | os.PathLike, offset: int | None = None) -> tuple[int, str] | None:
  """``(byte offset, description)`` of the first damaged record of ``path``, or None.

  With ``offset`` (from TensorFlow's "corrupted record at N" message: the record's
  start, or its data's start 12 bytes later for a data checksum) only the record
  framing up to that offset is walked and the data checksum is verified for the
  record at ``offset`` alone: cheap enough to scan every shard of a run. Without it
  every record's data checksum is verified. The returned offset is the record's start.
  """
  size = os.path.getsize(path)
  if offset is not None and offset >= size:
    return None
  position = 0
  with open(path, "rb") as f:
    while position < size:
      if offset is not None and position > offset:
        return None
      start = position
      check_data = offset is None or offset in (start, start + 12)
      problem, position = _record_problem(f, start, size, check_data)
      if problem:
        return start, problem
  return None
