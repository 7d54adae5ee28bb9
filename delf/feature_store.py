"""A sharded HDF5 feature store: millions of images' features in a few files.

One file per image (``.delg_global``, ``.delg_local``, ``.delf``) is the reference's
format and fine for Revisited Oxford/Paris; at GLDv2 scale (761,757 index and
117,577 test images, 4.1 M train images) it means millions of small files and a
global matrix assembled from as many reads. A store is a directory:

* ``part-<i>-of-<n>-<seq>.h5``: one HDF5 file per batch of images (``images_per_file``)
  written by the process with ``--shard_index=i --num_shards=n``. Each holds
  ``ids`` (UTF-8 strings), ``global/descriptors [N, D]`` (and ``global/empty``, the
  images whose descriptor was empty, e.g. under 10 px) and ragged local features:
  ``local/offsets [N + 1]`` into ``local/locations [M, 2]`` (y, x), ``scales``,
  ``attention``, ``orientations`` ``[M]`` and ``descriptors [M, d]``. Descriptors are
  float32 (exact copies of the per-image files' values) or float16 (``dtype``: half
  the disk, lossy); the other fields are float32. Datasets are contiguous and
  uncompressed, so the global descriptors can be memory-mapped.
* ``shard-<i>-of-<n>.json``: written when process ``i`` has finished its list: the
  names, sizes and image counts of its part files. A store is complete when every
  ``i`` in ``[0, n)`` has one; readers refuse incomplete stores (a missing or
  truncated part file, a missing shard) with a one-line ``StoreError``.

Every part file is written to a temporary name and renamed when complete, so a
killed extraction leaves only whole files behind; rerunning it skips every id
already stored in any part file and writes the rest into new parts. Array jobs
(``--num_shards``/``--shard_index`` on many machines) write disjoint file names:
there is nothing to merge. Readers: by id, by part file, and all global
descriptors streamed in blocks (or memory-mapped) without touching local features.

The store's ``fingerprint`` (a hash of its ids in order and its dimensions) lets a
search index refuse to be used with a store it was not built from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np

from delf import atomic_io

FORMAT_NAME = "delf-feature-store"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
DEFAULT_IMAGES_PER_FILE = 1000
_PART_RE = re.compile(r"^part-(\d{5})-of-(\d{5})-(\d{5})\.h5$")
_MANIFEST_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})\.json$")
LOCAL_FIELDS = ("locations", "scales", "descriptors", "attention", "orientations")


class StoreError(ValueError):
  """An unusable store: missing, corrupt or inconsistent files (one-line message)."""


def part_file_name(shard_index: int, num_shards: int, sequence: int) -> str:
  return f"part-{shard_index:05d}-of-{num_shards:05d}-{sequence:05d}.h5"


def manifest_file_name(shard_index: int, num_shards: int) -> str:
  return f"shard-{shard_index:05d}-of-{num_shards:05d}.json"


def is_store(path: str | os.PathLike) -> bool:
  """True for a directory that holds store files (complete or not)."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    return False
  return any(_PART_RE.match(n) or _MANIFEST_RE.match(n) for n in os.listdir(path))


@dataclasses.dataclass
class LocalArrays:
  """One image's local features, as ``feature_io.ReadFromFile`` returns them (float64)."""

  locations: np.ndarray
  scales: np.ndarray
  descriptors: np.ndarray
  attention: np.ndarray
  orientations: np.ndarray

  def as_tuple(self) -> tuple[np.ndarray, ...]:
    return tuple(getattr(self, name) for name in LOCAL_FIELDS)


@dataclasses.dataclass
class Record:
  """One image of a store; ``global_descriptor`` is ``[D]``, or ``[0]`` if it was empty."""

  id: str
  global_descriptor: np.ndarray | None
  local: LocalArrays | None


def _h5py():
  import h5py  # Imported lazily: most of the package never needs it.

  return h5py


def _open_h5(path: str):
  try:
    handle = _h5py().File(path, "r")
  except FileNotFoundError:
    raise StoreError(f"{path}: shard file is missing") from None
  except OSError as e:
    raise StoreError(f"{path}: not a readable HDF5 shard file ({e})") from None
  if handle.attrs.get("format") != FORMAT_NAME:
    handle.close()
    raise StoreError(f"{path}: not a {FORMAT_NAME} shard file")
  return handle


# --------------------------------------------------------------------------- writing


class StoreWriter:
  """Appends images to a store; one process per ``shard_index``.

  Args:
    root: store directory (created if missing).
    shard_index, num_shards: this process's share of an array job.
    images_per_file: images buffered before a part file is written (what a kill can
      lose, and the unit of reading by part).
    dtype: ``float32`` (exact) or ``float16`` (half the disk) for descriptors.
    has_global, has_local: which features every image has.

  Raises:
    StoreError: the store already holds features of another kind, dimension or
      dtype, or a part file of it cannot be read.
  """

  def __init__(
    self,
    root: str | os.PathLike,
    *,
    shard_index: int = 0,
    num_shards: int = 1,
    images_per_file: int = DEFAULT_IMAGES_PER_FILE,
    dtype: str = "float32",
    has_global: bool = True,
    has_local: bool = True,
  ):
    if dtype not in DTYPES:
      raise StoreError(f"store dtype must be one of {DTYPES}, got {dtype!r}")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
      raise StoreError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    if images_per_file < 1:
      raise StoreError(f"images_per_file must be positive, got {images_per_file}")
    if not (has_global or has_local):
      raise StoreError("a store needs global or local features")
    self.root = os.fspath(root)
    self.shard_index, self.num_shards = shard_index, num_shards
    self.images_per_file = images_per_file
    self.dtype = dtype
    self.has_global, self.has_local = has_global, has_local
    os.makedirs(self.root, exist_ok=True)
    other = sorted(
      {int(m[2]) for m in map(_MANIFEST_RE.match, os.listdir(self.root)) if m} - {num_shards}
    )
    if other:
      raise StoreError(
        f"{self.root}: written with --num_shards={other[0]}; resume or extend it with the "
        f"same sharding (got --num_shards={num_shards})"
      )
    self.global_dim: int | None = None
    self.local_dim: int | None = None
    self.done_ids: set[str] = set()
    self._sequence = 0
    for name in sorted(os.listdir(self.root)):
      match = _PART_RE.match(name)
      if not match:
        continue
      with _open_h5(os.path.join(self.root, name)) as handle:
        self._check_compatible(name, handle.attrs)
        self.done_ids.update(_decode_ids(handle["ids"][:]))
      if (int(match[1]), int(match[2])) == (shard_index, num_shards):
        self._sequence = max(self._sequence, int(match[3]) + 1)
    self._buffer: list[Record] = []
    self.num_written = 0

  def _check_compatible(self, name: str, attrs) -> None:
    problems = []
    if bool(attrs["has_global"]) != self.has_global or bool(attrs["has_local"]) != self.has_local:
      problems.append(
        f"holds {_kind(bool(attrs['has_global']), bool(attrs['has_local']))}, this run writes "
        f"{_kind(self.has_global, self.has_local)}"
      )
    if attrs["dtype"] != self.dtype:
      problems.append(f"dtype {attrs['dtype']}, this run writes {self.dtype}")
    if problems:
      raise StoreError(f"{os.path.join(self.root, name)}: {'; '.join(problems)}")
    for attr, current in (("global_dim", "global_dim"), ("local_dim", "local_dim")):
      value = int(attrs[attr])
      if value:
        setattr(self, current, value)

  def __contains__(self, image_id: str) -> bool:
    return image_id in self.done_ids

  def add(
    self,
    image_id: str,
    global_descriptor: np.ndarray | None = None,
    local: LocalArrays | Sequence[np.ndarray] | None = None,
  ) -> None:
    """Buffers one image; a part file is written every ``images_per_file`` images."""
    if image_id in self.done_ids:
      raise StoreError(f"{self.root}: image id {image_id!r} is already stored")
    if self.has_global:
      if global_descriptor is None:
        raise StoreError(f"{image_id}: this store needs a global descriptor")
      global_descriptor = np.asarray(global_descriptor, dtype=np.float32).reshape(-1)
      if global_descriptor.size:
        if self.global_dim is None:
          self.global_dim = global_descriptor.size
        elif global_descriptor.size != self.global_dim:
          raise StoreError(
            f"{image_id}: global descriptor has dimension {global_descriptor.size}, "
            f"the store {self.global_dim}"
          )
    if self.has_local:
      if local is None:
        raise StoreError(f"{image_id}: this store needs local features")
      local = _as_local_arrays(local)
      dim = local.descriptors.shape[1] if local.descriptors.ndim == 2 else 0
      if len(local.attention):
        if self.local_dim is None:
          self.local_dim = dim
        elif dim != self.local_dim:
          raise StoreError(
            f"{image_id}: local descriptors have dimension {dim}, the store {self.local_dim}"
          )
    self._buffer.append(Record(image_id, global_descriptor, local))
    self.done_ids.add(image_id)
    if len(self._buffer) >= self.images_per_file:
      self.flush()

  def flush(self) -> str | None:
    """Writes the buffered images as one part file (atomically); returns its path."""
    if not self._buffer:
      return None
    name = part_file_name(self.shard_index, self.num_shards, self._sequence)
    path = os.path.join(self.root, name)
    _write_part(path, self._buffer, self)
    self.num_written += len(self._buffer)
    self._buffer = []
    self._sequence += 1
    return path

  def close(self) -> str:
    """Flushes and writes this shard's manifest (the shard is then complete)."""
    self.flush()
    parts = []
    for name in sorted(os.listdir(self.root)):
      match = _PART_RE.match(name)
      if match and (int(match[1]), int(match[2])) == (self.shard_index, self.num_shards):
        path = os.path.join(self.root, name)
        with _open_h5(path) as handle:
          count = int(handle.attrs["num_images"])
        parts.append({"file": name, "num_images": count, "bytes": os.path.getsize(path)})
    manifest = {
      "format": FORMAT_NAME,
      "version": FORMAT_VERSION,
      "shard_index": self.shard_index,
      "num_shards": self.num_shards,
      "parts": parts,
    }
    path = os.path.join(self.root, manifest_file_name(self.shard_index, self.num_shards))
    atomic_io.write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")
    return path

  def __enter__(self) -> StoreWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    # On an error keep what was complete (resumable) but do not declare the shard done.
    if exc_type is None:
      self.close()
    else:
      self.flush()


def _kind(has_global: bool, has_local: bool) -> str:
  return " and ".join(k for k, v in (("global", has_global), ("local", has_local)) if v) + (
    " features"
  )


def _as_local_arrays(local) -> LocalArrays:
  if isinstance(local, LocalArrays):
    return local
  values = list(local)
  if len(values) == 4:
    values.append(None)
  locations, scales, descriptors, attention, orientations = values
  n = len(attention)
  if orientations is None:
    orientations = np.zeros([n])
  descriptors = np.asarray(descriptors)
  if descriptors.ndim != 2:
    descriptors = descriptors.reshape(n, -1) if descriptors.size else np.zeros([n, 0])
  return LocalArrays(
    np.asarray(locations).reshape(n, 2) if n else np.zeros([0, 2]),
    np.asarray(scales).reshape(n),
    descriptors,
    np.asarray(attention).reshape(n),
    np.asarray(orientations).reshape(n),
  )


def _write_part(path: str, records: list[Record], writer: StoreWriter) -> None:
  h5py = _h5py()
  dtype = np.dtype(writer.dtype)
  directory = os.path.dirname(path)
  fd, tmp_path = tempfile.mkstemp(
    prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
  )
  os.close(fd)
  try:
    with h5py.File(tmp_path, "w") as f:
      f.attrs.update(
        {
          "format": FORMAT_NAME,
          "version": FORMAT_VERSION,
          "num_images": len(records),
          "has_global": writer.has_global,
          "has_local": writer.has_local,
          "dtype": writer.dtype,
          "global_dim": writer.global_dim or 0,
          "local_dim": writer.local_dim or 0,
          "shard_index": writer.shard_index,
          "num_shards": writer.num_shards,
        }
      )
      f.create_dataset("ids", data=[r.id for r in records], dtype=h5py.string_dtype("utf-8"))
      if writer.has_global:
        dim = writer.global_dim or 0
        matrix = np.zeros([len(records), dim], dtype=dtype)
        empty = np.zeros([len(records)], dtype=bool)
        for row, record in enumerate(records):
          if record.global_descriptor.size:
            matrix[row] = record.global_descriptor
          else:
            empty[row] = True
        f.create_dataset("global/descriptors", data=matrix)
        f.create_dataset("global/empty", data=empty)
      if writer.has_local:
        _write_local(f, records, writer.local_dim or 0, dtype)
      f.flush()
    os.chmod(tmp_path, 0o666 & ~atomic_io.current_umask())
    with open(tmp_path, "rb") as f:
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp_path)
    raise


def _write_local(f, records: list[Record], dim: int, dtype: np.dtype) -> None:
  counts = np.array([len(r.local.attention) for r in records], dtype=np.int64)
  offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  total = int(offsets[-1])
  f.create_dataset("local/offsets", data=offsets)
  columns = {
    "locations": np.zeros([total, 2], np.float32),
    "scales": np.zeros([total], np.float32),
    "attention": np.zeros([total], np.float32),
    "orientations": np.zeros([total], np.float32),
    "descriptors": np.zeros([total, dim], dtype),
  }
  for record, start, stop in zip(records, offsets[:-1], offsets[1:]):
    if stop == start:
      continue
    for name, column in columns.items():
      column[start:stop] = getattr(record.local, name)
  for name, column in columns.items():
    f.create_dataset(f"local/{name}", data=column)


def _decode_ids(raw) -> list[str]:
  return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in raw]


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class PartInfo:
  """One part file: its path, image count and first row in store order."""

  path: str
  num_images: int
  first_row: int


class FeatureStore:
  """Read access to a complete store (validated on opening).

  Raises:
    StoreError: not a store, a shard without manifest, a missing, truncated or
      unreadable part file, a part file no manifest lists, or parts that disagree
      on kind, dtype or dimensions.
  """

  def __init__(self, root: str | os.PathLike):
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      raise StoreError(f"{self.root}: feature store not found (no such directory)")
    names = os.listdir(self.root)
    manifests = sorted(n for n in names if _MANIFEST_RE.match(n))
    part_names = {n for n in names if _PART_RE.match(n)}
    if not manifests:
      if part_names:
        raise StoreError(
          f"{self.root}: incomplete feature store ({len(part_names)} part file(s), no "
          "shard-*.json manifest): the extraction was interrupted; rerun it to finish"
        )
      raise StoreError(f"{self.root}: not a feature store (no shard-*.json manifest)")
    num_shards = {int(_MANIFEST_RE.match(n)[2]) for n in manifests}
    if len(num_shards) > 1:
      raise StoreError(
        f"{self.root}: manifests of different --num_shards ({sorted(num_shards)}) in one store"
      )
    (self.num_shards,) = num_shards
    present = {int(_MANIFEST_RE.match(n)[1]) for n in manifests}
    missing = sorted(set(range(self.num_shards)) - present)
    if missing:
      listed = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
      raise StoreError(
        f"{self.root}: incomplete feature store: shard(s) {listed} of {self.num_shards} have "
        f"no manifest (run them with --num_shards={self.num_shards} --shard_index=...)"
      )
    self.parts: list[PartInfo] = []
    listed_names: set[str] = set()
    row = 0
    for manifest in manifests:
      path = os.path.join(self.root, manifest)
      try:
        with open(path, encoding="utf-8") as f:
          content = json.load(f)
        entries = content["parts"]
      except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from None
      for entry in entries:
        part_path = os.path.join(self.root, entry["file"])
        if not os.path.exists(part_path):
          raise StoreError(f"{part_path}: shard file listed in {manifest} is missing")
        size = os.path.getsize(part_path)
        if size != entry["bytes"]:
          raise StoreError(
            f"{part_path}: {size} bytes, {manifest} says {entry['bytes']} (truncated or replaced)"
          )
        listed_names.add(entry["file"])
        self.parts.append(PartInfo(part_path, int(entry["num_images"]), row))
        row += int(entry["num_images"])
    orphans = sorted(part_names - listed_names)
    if orphans:
      raise StoreError(
        f"{os.path.join(self.root, orphans[0])}: part file not listed in any manifest "
        f"({len(orphans)} such); an extraction was interrupted: rerun it to finish the store"
      )
    self.num_images = row
    self._read_attributes()
    self._ids: list[str] | None = None
    self._row_of: dict[str, int] | None = None
    self._handles: dict[int, object] = {}
    self._pid = os.getpid()

  def _read_attributes(self) -> None:
    kinds, dtypes, global_dims, local_dims = set(), set(), set(), set()
    for part in self.parts:
      with _open_h5(part.path) as handle:
        attrs = handle.attrs
        if int(attrs["num_images"]) != part.num_images:
          raise StoreError(
            f"{part.path}: holds {int(attrs['num_images'])} images, its manifest says "
            f"{part.num_images}"
          )
        kinds.add((bool(attrs["has_global"]), bool(attrs["has_local"])))
        dtypes.add(str(attrs["dtype"]))
        if int(attrs["global_dim"]):
          global_dims.add(int(attrs["global_dim"]))
        if int(attrs["local_dim"]):
          local_dims.add(int(attrs["local_dim"]))
    for what, values in (
      ("feature kinds", kinds),
      ("dtypes", dtypes),
      ("global dimensions", global_dims),
      ("local dimensions", local_dims),
    ):
      if len(values) > 1:
        raise StoreError(f"{self.root}: part files disagree on {what}: {sorted(values)}")
    self.has_global, self.has_local = kinds.pop() if kinds else (True, True)
    self.dtype = dtypes.pop() if dtypes else "float32"
    self.global_dim = global_dims.pop() if global_dims else 0
    self.local_dim = local_dims.pop() if local_dims else 0

  # Handles are opened lazily and per process (h5py handles must not cross a fork).
  def _handle(self, part_number: int):
    if os.getpid() != self._pid:
      self._handles, self._pid = {}, os.getpid()
    handle = self._handles.get(part_number)
    if handle is None:
      handle = _open_h5(self.parts[part_number].path)
      self._handles[part_number] = handle
    return handle

  def close(self) -> None:
    for handle in self._handles.values():
      with contextlib.suppress(Exception):
        handle.close()
    self._handles = {}

  def __enter__(self) -> FeatureStore:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __len__(self) -> int:
    return self.num_images

  @property
  def ids(self) -> list[str]:
    """All image ids, in store order (part files in manifest order)."""
    if self._ids is None:
      ids: list[str] = []
      for number in range(len(self.parts)):
        ids.extend(_decode_ids(self._read(number, "ids")))
      self._ids = ids
    return self._ids

  def row_of(self, image_id: str) -> int:
    if self._row_of is None:
      self._row_of = {}
      for row, image in enumerate(self.ids):
        if image in self._row_of:
          raise StoreError(f"{self.root}: image id {image!r} is stored twice")
        self._row_of[image] = row
    try:
      return self._row_of[image_id]
    except KeyError:
      raise KeyError(f"{image_id!r} is not in the feature store {self.root}") from None

  def __contains__(self, image_id: str) -> bool:
    try:
      self.row_of(image_id)
    except KeyError:
      return False
    return True

  @property
  def fingerprint(self) -> str:
    """Hash of the ids in order and the dimensions: what an index was built from."""
    digest = hashlib.sha256()
    digest.update(f"{self.global_dim}:{self.local_dim}:{self.num_images}\n".encode())
    for image_id in self.ids:
      digest.update(image_id.encode("utf-8") + b"\n")
    return digest.hexdigest()[:32]

  def _read(self, part_number: int, name: str, selection=slice(None)):
    try:
      return self._handle(part_number)[name][selection]
    except StoreError:
      raise
    except (OSError, KeyError) as e:
      raise StoreError(f"{self.parts[part_number].path}: cannot read {name} ({e})") from None

  def _locate(self, row: int) -> tuple[int, int]:
    firsts = [part.first_row for part in self.parts]
    number = int(np.searchsorted(firsts, row, side="right")) - 1
    return number, row - self.parts[number].first_row

  def _require(self, what: str) -> None:
    if not getattr(self, f"has_{what}"):
      raise StoreError(f"{self.root}: the store holds no {what} features")

  def global_descriptor(self, image_id: str) -> np.ndarray:
    """``[D]`` float32, or ``[0]`` for an image whose descriptor was empty."""
    self._require("global")
    number, row = self._locate(self.row_of(image_id))
    if self._read(number, "global/empty", row):
      return np.zeros([0], np.float32)
    return np.asarray(self._read(number, "global/descriptors", row), dtype=np.float32)

  def local_features(self, image_id: str) -> LocalArrays:
    """One image's local features (float64 arrays, as ``feature_io`` returns them)."""
    self._require("local")
    number, row = self._locate(self.row_of(image_id))
    start, stop = (int(x) for x in self._read(number, "local/offsets", slice(row, row + 2)))
    return self._local_slice(number, start, stop)

  def _local_slice(self, number: int, start: int, stop: int) -> LocalArrays:
    if stop == start:
      empty = np.array([])
      return LocalArrays(empty, empty, empty, empty, empty)
    values = {
      name: np.asarray(self._read(number, f"local/{name}", slice(start, stop)), np.float64)
      for name in LOCAL_FIELDS
    }
    return LocalArrays(**values)

  def get(self, image_id: str) -> Record:
    return Record(
      image_id,
      self.global_descriptor(image_id) if self.has_global else None,
      self.local_features(image_id) if self.has_local else None,
    )

  def read_part(self, part_number: int) -> Iterator[Record]:
    """Every image of one part file, in order (one read per dataset)."""
    ids = _decode_ids(self._read(part_number, "ids"))
    descriptors = empty = offsets = None
    if self.has_global:
      descriptors = np.asarray(self._read(part_number, "global/descriptors"), np.float32)
      empty = self._read(part_number, "global/empty")
    local_columns = {}
    if self.has_local:
      offsets = self._read(part_number, "local/offsets")
      local_columns = {
        name: np.asarray(self._read(part_number, f"local/{name}"), np.float64)
        for name in LOCAL_FIELDS
      }
    for row, image_id in enumerate(ids):
      global_descriptor = local = None
      if descriptors is not None:
        global_descriptor = np.zeros([0], np.float32) if empty[row] else descriptors[row]
      if offsets is not None:
        start, stop = int(offsets[row]), int(offsets[row + 1])
        if start == stop:
          blank = np.array([])
          local = LocalArrays(blank, blank, blank, blank, blank)
        else:
          local = LocalArrays(**{k: v[start:stop] for k, v in local_columns.items()})
      yield Record(image_id, global_descriptor, local)

  def __iter__(self) -> Iterator[Record]:
    for number in range(len(self.parts)):
      yield from self.read_part(number)

  def empty_global_rows(self) -> np.ndarray:
    """Store rows whose global descriptor was empty (they read as zero vectors)."""
    self._require("global")
    rows = [
      part.first_row + np.flatnonzero(self._read(number, "global/empty"))
      for number, part in enumerate(self.parts)
    ]
    return np.concatenate(rows) if rows else np.zeros([0], np.int64)

  def global_memmaps(self) -> list[np.ndarray]:
    """One read-only memory map ``[n, D]`` per part file (no data is read up front)."""
    self._require("global")
    maps = []
    for number, part in enumerate(self.parts):
      dataset = self._handle(number)["global/descriptors"]
      offset = dataset.id.get_offset()
      if dataset.shape != (part.num_images, self.global_dim) or offset is None:
        maps.append(np.zeros([part.num_images, self.global_dim], dataset.dtype))
        continue
      maps.append(
        np.memmap(part.path, mode="r", dtype=dataset.dtype, offset=offset, shape=dataset.shape)
      )
    return maps

  def iter_global_blocks(
    self, block_rows: int = 65536, dtype=np.float32
  ) -> Iterator[tuple[int, np.ndarray]]:
    """Streams all global descriptors as ``(first_row, [b, D] array)`` blocks."""
    for part, mapped in zip(self.parts, self.global_memmaps()):
      for start in range(0, part.num_images, block_rows):
        block = np.asarray(mapped[start : start + block_rows], dtype=dtype)
        yield part.first_row + start, block

  def read_global(self, dtype=np.float32) -> np.ndarray:
    """All global descriptors ``[N, D]`` in store order (one allocation)."""
    self._require("global")
    matrix = np.empty([self.num_images, self.global_dim], dtype=dtype)
    for first_row, block in self.iter_global_blocks(dtype=dtype):
      matrix[first_row : first_row + len(block)] = block
    return matrix
