"""``python -m fidelity`` (``make fidelity``): the oracle suite against the runnable reference.

Sets up the reference (``../shared/reference``) into a directory outside the
repository if needed, makes the inputs, runs every check with both
implementations in separate processes (two at a time), prints one table
(check, max difference, tolerance, pass) and exits non-zero if a check fails.
Where ``../shared/reference`` is absent it says so and exits 0 (skipped).
Relative differences are ``max|ours - ref| / max|ref|`` per tensor.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from fidelity import compare
from fidelity.checks import (
  dataset_build,
  export_extraction,
  forward_pass,
  matching,
  training_step,
)
from fidelity.reference_env import CommandError, ReferenceEnvironment
from fidelity.runner import Context, Stopwatch, progress, side_by_side


def _parse(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m fidelity", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", help="where to write (default: a new temporary directory)")
  parser.add_argument("--keep", action="store_true", help="keep the work directory")
  return parser.parse_args(argv)


def _demo_images(root: str, count: int = 2) -> list[str]:
  """``count`` index images of the first landmark of the demo dataset (two views of it)."""
  by_landmark: dict[str, list[str]] = {}
  with open(os.path.join(root, "index", "index_image_to_landmark.csv")) as f:
    for row in csv.DictReader(f):
      by_landmark.setdefault(row["landmark_id"], []).append(row["id"])
  ids = next(ids for ids in by_landmark.values() if len(ids) >= count)[:count]
  return [os.path.join(root, "index", i[0], i[1], i[2], i + ".jpg") for i in ids]


def _class_count(build_dir: str) -> int:
  with open(os.path.join(build_dir, "relabeling.csv")) as f:
    return sum(1 for _ in f) - 1


def run_suite(ctx: Context) -> list[compare.Row]:
  rows: list[compare.Row] = []
  dataset = ctx.path("gldv2")

  def setup():
    spent = ctx.reference.ensure_setup(ctx.log("reference_setup"))
    state = f"set up in {spent:.0f} s" if spent else "ready"
    progress(f"reference at {ctx.reference.home} ({state})")

  def inputs():
    ctx.ours(
      "make_demo_dataset",
      [
        "scripts/make_demo_dataset.py",
        f"--output_dir={dataset}",
        "--num_landmarks=6",
        "--images_per_landmark=6",
        "--image_width=192",
        "--image_height=144",
      ],
    )

  side_by_side(setup, inputs)

  def stage(name: str, function, *args):
    clock = Stopwatch()
    progress(f"{name} ...")
    try:
      result = function(ctx, *args)
    except (CommandError, OSError, KeyError, ValueError) as e:
      rows.append(compare.failure(name, str(e).splitlines()[0][:300]))
      progress(f"{name} FAILED after {clock}: {e}")
      return None
    stage_rows = result[0] if isinstance(result, tuple) else result
    rows.extend(stage_rows)
    failed = sum(r.failed for r in stage_rows)
    progress(f"{name} done in {clock}" + (f", {failed} FAILED" if failed else ""))
    return result

  built = stage("dataset build", dataset_build.run, dataset)
  trained = None
  if built:
    build_dir = built[1]["ref_clean"]
    train = os.path.join(build_dir, "train-00000-of-00002")
    validation = os.path.join(build_dir, "validation-00000-of-00002")
    trained = stage("training step", training_step.run, train, validation, _class_count(build_dir))
  images = _demo_images(dataset)
  if trained:
    num_classes = _class_count(built[1]["ref_clean"])
    stage("forward pass", forward_pass.run, trained[1], num_classes)
    extracted = stage("export + extraction", export_extraction.run, trained[1], images)
    if extracted:
      source = os.path.join(
        extracted[1]["ref"], os.path.splitext(os.path.basename(images[0]))[0] + ".delf"
      )
      stage("matching", matching.run, source, images)
  return rows


def main(argv: list[str]) -> int:
  args = _parse(argv)
  reference = ReferenceEnvironment.locate()
  if reference is None:
    print(
      "make fidelity: SKIPPED: the reference implementation is not available "
      "(../shared/reference/setup.sh not found; set DELF_REFERENCE_SOURCE to its folder)",
      flush=True,
    )
    return 0
  workdir = args.workdir or tempfile.mkdtemp(prefix="delf-fidelity-")
  os.makedirs(workdir, exist_ok=True)
  progress(f"work directory {workdir} (logs in {os.path.join(workdir, 'logs')})")
  start = time.monotonic()
  ctx = Context(workdir, reference)
  try:
    rows = run_suite(ctx)
  except CommandError as e:
    rows = [compare.failure("setup", str(e).splitlines()[0][:300])]
  elapsed = time.monotonic() - start
  print()
  print(compare.format_table(rows))
  failed = [r for r in rows if r.failed]
  print(
    f"\n{len(rows) - len(failed)} of {len(rows)} rows without failure, {len(failed)} failed; "
    f"{elapsed:.0f} s in all"
  )
  if failed or args.keep:
    print(f"outputs and logs kept in {workdir}")
  else:
    shutil.rmtree(workdir, ignore_errors=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
