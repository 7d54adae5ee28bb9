"""Converts per-image feature files to a feature store and back, losslessly.

Usage:
  # .delg_global + .delg_local files (or .delf with --kind=delf) -> store:
  python -m scripts.convert_features --input_dir=features/index --output_store=stores/index
  # store -> per-image files (byte-identical to the originals for a float32 store):
  python -m scripts.convert_features --input_store=stores/index --output_dir=features/index_again

A file that would not come back byte-identical is refused with its name. Converting
into an existing store adds only the ids it does not hold yet.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags, feature_conversion, feature_store

_INPUT_DIR = flags.DEFINE_string("input_dir", "", "Folder of per-image feature files to store.")
_OUTPUT_STORE = flags.DEFINE_string(
  "output_store", "", "Store directory to write (with --input_dir)."
)
_INPUT_STORE = flags.DEFINE_string("input_store", "", "Store to convert back to per-image files.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "", "Folder for the files (with --input_store).")
_KIND = flags.DEFINE_enum(
  "kind",
  None,
  sorted(feature_conversion.KINDS),
  "delg (.delg_global/.delg_local) or delf (.delf). Default: delg from files; from a store, "
  "delg if it has global descriptors, else delf.",
)
_DTYPE = flags.DEFINE_enum(
  "dtype",
  "float32",
  list(feature_store.DTYPES),
  "Descriptor precision in the store: float32 (lossless) or float16 (half the disk, lossy).",
)
_IMAGES_PER_FILE = flags.DEFINE_integer(
  "images_per_file",
  feature_store.DEFAULT_IMAGES_PER_FILE,
  "Images per store part file.",
  lower_bound=1,
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  to_store = bool(_INPUT_DIR.value or _OUTPUT_STORE.value)
  to_files = bool(_INPUT_STORE.value or _OUTPUT_DIR.value)
  if (
    to_store == to_files
    or (to_store and not (_INPUT_DIR.value and _OUTPUT_STORE.value))
    or (to_files and not (_INPUT_STORE.value and _OUTPUT_DIR.value))
  ):
    raise app.UsageError(
      "give either --input_dir and --output_store, or --input_store and --output_dir"
    )
  try:
    if to_store:
      feature_conversion.files_to_store(
        _INPUT_DIR.value,
        _OUTPUT_STORE.value,
        kind=_KIND.value or "delg",
        dtype=_DTYPE.value,
        images_per_file=_IMAGES_PER_FILE.value,
      )
    else:
      feature_conversion.store_to_files(_INPUT_STORE.value, _OUTPUT_DIR.value, kind=_KIND.value)
  except (OSError, ValueError) as e:
    raise SystemExit(f"convert_features: {e}") from None


if __name__ == "__main__":
  cli_flags.run(main)
