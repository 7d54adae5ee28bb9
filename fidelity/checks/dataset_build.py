"""Dataset build: the same CSVs and images give the same shards, records and relabelling.

Both ``build_image_dataset.py`` run on the demo dataset, in clean mode with the
train/validation split (plus test shards) and in full mode. Compared: the shard
files and their record counts, each shard's records in order (image ids),
every ``tf.train.Example`` parsed, every record's bytes after canonical
serialisation (the reference's Example re-serialised with
``deterministic=True``, i.e. map entries sorted by key, must equal our record
byte for byte) and ``relabeling.csv`` byte for byte.

Where the reference takes images in the order ``tf.io.gfile.glob`` returns them
(full-CSV mode, the test split), that order changes from run to run (the
directory walk is parallel), so those records are compared as sets; ours are in
sorted path order (README, "Differences from the reference").

Raw shard bytes are not expected to match: the reference's protobuf runtime
(upb) writes the feature map in a hash order seeded per process, so the
reference's own shards differ from run to run; ours are sorted, which is what
``SerializeToString(deterministic=True)`` gives. The table reports how many
shards happen to be identical, as information.
"""

from __future__ import annotations

import os

from fidelity.compare import Row
from fidelity.runner import Context, quiet_stderr, side_by_side

# Files only our build writes (beyond the reference, documented in the README).
# Ours beyond the reference: the skipped-image list, the manifest, and the lock file that
# keeps two builds out of one folder (issue 8; empty, left in place like any flock file).
OUR_EXTRA_FILES = {"skipped_images.csv", "dataset_metadata.json", ".build_image_dataset.lock"}


def build_flags(dataset: str, output: str, mode: str) -> list[str]:
  train = os.path.join(dataset, "train")
  flags = [
    f"--train_directory={train}/*/*/*/",
    f"--output_directory={output}",
    f"--train_csv_path={train}/train.csv",
  ]
  if mode == "clean":
    return [
      *flags,
      f"--train_clean_csv_path={train}/train_clean.csv",
      "--num_shards=2",
      "--generate_train_validation_splits",
      "--validation_split_size=0.2",
      "--seed=0",
      f"--test_csv_path={dataset}/test/test.csv",
      f"--test_directory={dataset}/test/*/*/*/",
    ]
  return [*flags, "--num_shards=3"]


def run(ctx: Context, dataset: str) -> tuple[list[Row], dict[str, str]]:
  """Builds with both; returns the rows and the output directories (``ref_clean`` etc.)."""
  outputs = {
    f"{side}_{mode}": ctx.path("build", side, mode)
    for side in ("ref", "ours")
    for mode in ("clean", "full")
  }
  for directory in outputs.values():
    os.makedirs(directory, exist_ok=True)  # the reference does not create it

  def reference():
    for mode in ("clean", "full"):
      ctx.ref(
        f"build_reference_{mode}",
        [
          ctx.reference.delf_script("training/build_image_dataset.py"),
          *build_flags(dataset, outputs[f"ref_{mode}"], mode),
        ],
      )

  def ours():
    for mode in ("clean", "full"):
      ctx.ours(
        f"build_ours_{mode}",
        ["scripts/build_image_dataset.py", *build_flags(dataset, outputs[f"ours_{mode}"], mode)],
      )

  side_by_side(reference, ours)
  rows = []
  identical, total = 0, 0
  for mode in ("clean", "full"):
    mode_rows, same, count = compare_builds(outputs[f"ref_{mode}"], outputs[f"ours_{mode}"], mode)
    rows += mode_rows
    identical, total = identical + same, total + count
  rows.append(
    Row(
      "dataset build: raw shard bytes identical",
      None,
      None,
      f"{identical} of {total} shards; the reference's map order is per process (upb), "
      "ours sorted = deterministic serialisation",
    )
  )
  return rows, outputs


def _records(path: str) -> list[bytes]:
  from delf.data.tfrecord import read_tfrecord

  return list(read_tfrecord(path))


def _split_of(shard: str) -> str:
  return shard.split("-", 1)[0]


def _ordered(mode: str, split: str) -> bool:
  """Whether the reference's record order is defined: CSV order (clean mode train and
  validation), not TensorFlow's glob order (full mode, test split), which changes from
  run to run."""
  return mode == "clean" and split in ("train", "validation")


def compare_builds(ref_dir: str, our_dir: str, mode: str) -> tuple[list[Row], int, int]:
  from delf.data.tfrecord import parse_example

  with quiet_stderr():
    from tensorflow.core.example import example_pb2

  label = "dataset build (clean + split + test)" if mode == "clean" else "dataset build (full CSV)"
  ref_files = sorted(os.listdir(ref_dir))
  our_files = sorted(os.listdir(our_dir))
  missing = [f for f in ref_files if f not in our_files]
  extra = [f for f in our_files if f not in ref_files and f not in OUR_EXTRA_FILES]
  shards = [f for f in ref_files if f not in missing and "-of-" in f]
  order_mismatches = len(missing) + len(extra)
  by_split: dict[str, list[tuple[list[bytes], list[bytes]]]] = {}
  identical_shards = 0
  for name in shards:
    ref_path, our_path = os.path.join(ref_dir, name), os.path.join(our_dir, name)
    with open(ref_path, "rb") as a, open(our_path, "rb") as b:
      identical_shards += a.read() == b.read()
    by_split.setdefault(_split_of(name), []).append((_records(ref_path), _records(our_path)))
  pairs: list[tuple[bytes, bytes]] = []
  unordered = []
  for split, shard_pairs in sorted(by_split.items()):
    counts = [(len(a), len(b)) for a, b in shard_pairs]
    order_mismatches += sum(x != y for x, y in counts)
    theirs = [r for a, _ in shard_pairs for r in a]
    ours = [r for _, b in shard_pairs for r in b]
    if _ordered(mode, split):
      ids = [
        (parse_example(a).get("image/id"), parse_example(b).get("image/id"))
        for a, b in zip(theirs, ours)
      ]
      order_mismatches += sum(x != y for x, y in ids)
      pairs += list(zip(theirs, ours))
    else:
      unordered.append(split)
      key = lambda r: parse_example(r).get("image/id")  # noqa: E731
      theirs, ours = sorted(theirs, key=key), sorted(ours, key=key)
      order_mismatches += sum(key(a) != key(b) for a, b in zip(theirs, ours))
      pairs += list(zip(theirs, ours))
  parse_mismatches = sum(parse_example(a) != parse_example(b) for a, b in pairs)
  canonical_mismatches = sum(
    example_pb2.Example.FromString(a).SerializeToString(deterministic=True) != b for a, b in pairs
  )
  note = f"{len(shards)} shards, {len(pairs)} records"
  if unordered:
    note += f"; {'/'.join(unordered)}: as sets (glob order, see README)"
  if missing or extra:
    note += f"; missing {missing[:3]} extra {extra[:3]}"
  rows = [
    Row(f"{label}: shard files, record counts, order, ids", order_mismatches, 0, note),
    Row(f"{label}: Examples equal when parsed", parse_mismatches, 0, f"{len(pairs)} records"),
    Row(
      f"{label}: record bytes (canonical serialisation)",
      canonical_mismatches,
      0,
      "reference re-serialised with deterministic=True",
    ),
  ]
  if mode == "clean" or "relabeling.csv" in ref_files:
    rows.append(
      Row(
        f"{label}: relabeling.csv bytes",
        _file_difference(ref_dir, our_dir, "relabeling.csv"),
        0,
      )
    )
  return rows, identical_shards, len(shards)


def _file_difference(ref_dir: str, our_dir: str, name: str) -> int:
  """0 when both files exist with the same bytes, else 1."""
  paths = [os.path.join(d, name) for d in (ref_dir, our_dir)]
  if not all(os.path.exists(p) for p in paths):
    return 1
  with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
    return int(a.read() != b.read())
