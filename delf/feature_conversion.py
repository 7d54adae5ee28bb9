"""Per-image feature files <-> feature store, lossless both ways.

``files_to_store`` reads every ``<id>.delg_global`` / ``<id>.delg_local`` (kind
``delg``) or ``<id>.delf`` (kind ``delf``) file of a folder into a store;
``store_to_files`` writes them back. Before an image is stored, its files are
re-serialised from the parsed values and compared with the original bytes: a file
that would not come back byte-identical (e.g. a uint32 datum, an unset proto field,
a descriptor that is not ``[D]`` float) is refused with its name, so a float32
store always converts back to the same bytes. A float16 store is lossy by choice.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import TextIO

import numpy as np

from delf import datum_io, feature_io, feature_store
from delf.progress import ProgressReporter

KINDS = {"delg": (".delg_global", ".delg_local"), "delf": (None, ".delf")}


class ConversionError(ValueError):
  """A file that cannot be stored losslessly, or an unusable input (one line)."""


@dataclasses.dataclass
class ConversionSummary:
  num_images: int = 0
  num_skipped: int = 0
  output: str = ""


def _ids_with(folder: str, extension: str | None) -> set[str]:
  if extension is None:
    return set()
  return {n[: -len(extension)] for n in os.listdir(folder) if n.endswith(extension)}


def _read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _parse_global(path: str) -> np.ndarray:
  data = _read_bytes(path)
  try:
    array = datum_io.ParseFromString(data)
  except Exception as e:
    raise ConversionError(f"{path}: not a DatumProto file ({type(e).__name__}: {e})") from None
  if array.dtype != np.float32 or array.ndim != 1:
    raise ConversionError(
      f"{path}: a {array.dtype} array of shape {list(array.shape)}; the store keeps [D] floats"
    )
  if datum_io.SerializeToString(array) != data:
    raise ConversionError(f"{path}: would not convert back byte-identical (non-canonical bytes)")
  return array


def _parse_local(path: str) -> tuple[np.ndarray, ...]:
  data = _read_bytes(path)
  try:
    arrays = feature_io.ParseFromString(data)
  except Exception as e:
    raise ConversionError(f"{path}: not a DelfFeatures file ({type(e).__name__}: {e})") from None
  if feature_io.SerializeToString(*arrays) != data:
    raise ConversionError(
      f"{path}: would not convert back byte-identical (unset fields or non-float descriptors)"
    )
  return arrays


def files_to_store(
  input_dir: str,
  output_store: str,
  *,
  kind: str = "delg",
  dtype: str = "float32",
  images_per_file: int = feature_store.DEFAULT_IMAGES_PER_FILE,
  out: TextIO | None = None,
) -> ConversionSummary:
  """Stores every image of ``input_dir`` (ids in sorted order); resumable like extraction.

  Raises:
    ConversionError: unknown kind, no feature file, an image with only one of its
      two DELG files, or a file that would not convert back byte-identical.
  """
  out = out or sys.stdout
  if kind not in KINDS:
    raise ConversionError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
  if not os.path.isdir(input_dir):
    raise ConversionError(f"{input_dir}: no such directory")
  global_ext, local_ext = KINDS[kind]
  global_ids, local_ids = _ids_with(input_dir, global_ext), _ids_with(input_dir, local_ext)
  ids = sorted(global_ids | local_ids)
  if not ids:
    raise ConversionError(f"{input_dir}: no {' or '.join(e for e in KINDS[kind] if e)} files")
  has_global, has_local = bool(global_ids), bool(local_ids)
  if has_global and has_local and global_ids != local_ids:
    odd = sorted(global_ids ^ local_ids)[0]
    raise ConversionError(
      f"{input_dir}: {len(global_ids ^ local_ids)} image(s) have only one of "
      f"{global_ext}/{local_ext} (e.g. {odd})"
    )
  summary = ConversionSummary(output=output_store)
  progress = ProgressReporter(
    f"Converting {input_dir}", total=len(ids), unit="images", every_items=1000, stream=out
  )
  with feature_store.StoreWriter(
    output_store,
    images_per_file=images_per_file,
    dtype=dtype,
    has_global=has_global,
    has_local=has_local,
  ) as writer:
    for image_id in ids:
      if image_id in writer:
        summary.num_skipped += 1
      else:
        descriptor = (
          _parse_global(os.path.join(input_dir, image_id + global_ext)) if has_global else None
        )
        local = _parse_local(os.path.join(input_dir, image_id + local_ext)) if has_local else None
        writer.add(image_id, descriptor, local)
        summary.num_images += 1
      progress.update()
  progress.done()
  print(
    f"Stored {summary.num_images} images in {output_store} ({summary.num_skipped} already there)",
    file=out,
  )
  return summary


def store_to_files(
  input_store: str,
  output_dir: str,
  *,
  kind: str | None = None,
  out: TextIO | None = None,
) -> ConversionSummary:
  """Writes every image of a store back as per-image files (atomically each).

  ``kind`` defaults to ``delg`` for stores with global descriptors, else ``delf``.
  """
  out = out or sys.stdout
  store = feature_store.FeatureStore(input_store)
  kind = kind or ("delg" if store.has_global else "delf")
  if kind not in KINDS:
    raise ConversionError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
  global_ext, local_ext = KINDS[kind]
  if store.has_global and global_ext is None:
    raise ConversionError(f"{input_store}: has global descriptors, which .delf files cannot hold")
  os.makedirs(output_dir, exist_ok=True)
  summary = ConversionSummary(output=output_dir)
  progress = ProgressReporter(
    f"Converting {input_store}", total=len(store), unit="images", every_items=1000, stream=out
  )
  with store:
    for record in store:
      if record.global_descriptor is not None:
        datum_io.WriteToFile(
          record.global_descriptor, os.path.join(output_dir, record.id + global_ext)
        )
      if record.local is not None:
        feature_io.WriteToFile(
          os.path.join(output_dir, record.id + local_ext), *record.local.as_tuple()
        )
      summary.num_images += 1
      progress.update()
  progress.done()
  print(f"Wrote {summary.num_images} images' files to {output_dir}", file=out)
  return summary
