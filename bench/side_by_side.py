r"""Ours vs the reference, both run here, same inputs and flags, alternating, medians.

Usage (run under the exclusive CPU lock so that nothing else shares the cores):
  flock -x /tmp/delf-cpu.lock .venv/bin/python -m bench.side_by_side \
    [--sections=build,train8,train81313,extract,match] [--models=delf,delg] [--repeats=3] \
    [--ref=~/.cache/delf/reference]

The reference (`../shared/reference`, set up by its setup.sh into --ref) runs in its own
process environment (its env.sh: PY, PYTHONPATH, TF_USE_LEGACY_KERAS); ours runs with this
venv's Python and a clean environment. Every row is a pair of processes started one after
the other, ours and the reference's alternately first, repeated --repeats times; the table
gives medians and the ratio of the medians (reference / ours: > 1 means we are faster).
Peak memory is each process's own maximum RSS (os.wait4).

Sections:
* build: ``build_image_dataset.py`` on the demo dataset (clean CSV + split, 4 shards), whole
  process wall time.
* train8 / train81313: ``train.py`` at 64 px, batch 8, default flags (autoencoder on),
  DELF and DELG (``--delg_global_features``), 8 or 81,313 classes. s/step = (wall of a
  --long_steps run - wall of a --short_steps run) / (difference of steps), as the issue
  measured, so start-up, tracing and the final checkpoint cancel out.
* extract: the DELF example setting (7 scales 0.25 ... 2.0, 1000 features, threshold 0,
  no PCA) on 640x480 views; the reference's extractor on its own export (a 1-step
  reference training at 8 classes, ``export_local_model.py --nouse_autoencoder``), ours on
  our exports of a random-weight model (float32; bfloat16; bfloat16 with --batch_size=4).
  s/image = (10-image run - 1-image run) / 9.
* match: whole ``match_images.py`` processes on the same pair of .delf files.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
OURS_PY = sys.executable
SCALES = [0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0]


# ---------------------------------------------------------------------------- processes


def reference_env(ref: str) -> dict:
  """The reference's environment from its env.sh, on top of a copy of ours (never leaked)."""
  script = f"source {shlex.quote(os.path.join(ref, 'env.sh'))} && env -0"
  output = subprocess.run(["bash", "-c", script], check=True, capture_output=True).stdout
  env = dict(item.split("=", 1) for item in output.decode().split("\0") if "=" in item)
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def our_env() -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


LAST_CPU_SECONDS = [0.0]  # user + system CPU time of the last `timed` process


def timed(command: list[str], env: dict, cwd: str | None = None, log: str | None = None):
  """Runs a process; returns (wall seconds, its own peak RSS in GB). Fails loudly.

  Its CPU time (user + system) is left in ``LAST_CPU_SECONDS[0]``: under load from other
  jobs, CPU seconds per step are far steadier than wall seconds.
  """
  out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
  start = time.perf_counter()
  process = subprocess.Popen(command, env=env, cwd=cwd or str(REPO), stdout=out, stderr=out)
  _, status, usage = os.wait4(process.pid, 0)
  wall = time.perf_counter() - start
  LAST_CPU_SECONDS[0] = usage.ru_utime + usage.ru_stime
  if log:
    out.close()
  code = os.waitstatus_to_exitcode(status)
  if code != 0:
    tail = pathlib.Path(log).read_text()[-2000:] if log else ""
    raise RuntimeError(f"exit {code}: {' '.join(command)}\n{tail}")
  return wall, usage.ru_maxrss / 1024 / 1024


class Table:
  def __init__(self):
    self.rows: list[tuple] = []

  def add(self, stage, unit, ours, ref, ours_mem=None, ref_mem=None, note=""):
    self.rows.append((stage, unit, ours, ref, ours_mem, ref_mem, note))
    print(f"  -> {stage}: ours {_fmt(ours)} / reference {_fmt(ref)} {unit}", flush=True)

  def print(self):
    print()
    print(
      "| stage | unit | reference | ours | ratio (ref/ours) | peak RSS ref | peak RSS ours | runs |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for stage, unit, ours, ref, ours_mem, ref_mem, note in self.rows:
      ratio = f"{statistics.median(ref) / statistics.median(ours):.2f}x" if ref else ""
      print(
        f"| {stage} | {unit} | {_fmt(ref)} | {_fmt(ours)} | {ratio} | {_fmt_mem(ref_mem)} | "
        f"{_fmt_mem(ours_mem)} | {note} |"
      )


def _fmt(values) -> str:
  if not values:
    return "-"
  median = statistics.median(values)
  spread = f" ({min(values):.3g}-{max(values):.3g})" if len(values) > 1 else ""
  return f"{median:.3g}{spread}"


def _fmt_mem(values) -> str:
  return f"{max(values):.2f} GB" if values else "-"


def alternate(repeats: int, ours, ref):
  """Runs ours() and ref() alternately (ours first on even rounds); collects their results."""
  ours_results, ref_results = [], []
  for i in range(repeats):
    order = [(ours, ours_results), (ref, ref_results)]
    if i % 2:
      order.reverse()
    for function, results in order:
      if function is not None:
        results.append(function())
  return ours_results, ref_results


# ---------------------------------------------------------------------------- data


def make_dataset(work: pathlib.Path) -> pathlib.Path:
  root = work / "gldv2_dataset"
  if not root.exists():
    subprocess.run(
      [OURS_PY, "scripts/make_demo_dataset.py", f"--output_dir={root}", "--seed=0"],
      check=True,
      cwd=REPO,
      env=our_env(),
      stdout=subprocess.DEVNULL,
    )
  return root


def build_flags(root: pathlib.Path, output: pathlib.Path) -> list[str]:
  return [
    f"--train_csv_path={root}/train/train.csv",
    f"--train_clean_csv_path={root}/train/train_clean.csv",
    f"--train_directory={root}/train/*/*/*/",
    f"--output_directory={output}",
    "--num_shards=4",
    "--generate_train_validation_splits",
    "--validation_split_size=0.2",
  ]


def tfrecords(work: pathlib.Path) -> pathlib.Path:
  output = work / "tfrecord"
  if not output.exists():
    root = make_dataset(work)
    timed([OURS_PY, "scripts/build_image_dataset.py", *build_flags(root, output)], our_env())
  return output


# ---------------------------------------------------------------------------- sections


def section_build(args, table, work, ref_env):
  root = make_dataset(work)
  counter = iter(range(10**6))

  def run(python, script, env):
    output = work / f"build_{next(counter)}"
    output.mkdir()  # The reference does not create it.
    result = timed([python, script, *build_flags(root, output)], env)
    return result

  ours, ref = alternate(
    args.repeats,
    lambda: run(OURS_PY, "scripts/build_image_dataset.py", our_env()),
    lambda: run(ref_env["PY"], f"{ref_env['REF_DELF']}/training/build_image_dataset.py", ref_env),
  )
  images = sum(1 for _ in (root / "train").rglob("*.jpg"))
  table.add(
    f"dataset build, demo set ({images} images, clean + split, 4 shards), whole process",
    "s",
    [w for w, _ in ours],
    [w for w, _ in ref],
    [m for _, m in ours],
    [m for _, m in ref],
    f"{args.repeats} pairs",
  )


def _train_command(python, script, data, logdir, steps, delg, num_classes, ours):
  command = [
    python,
    script,
    f"--train_file_pattern={data}/train-*",
    f"--validation_file_pattern={data}/validation-*",
    "--dataset_version=gld_v2_clean",
    f"--logdir={logdir}",
    "--batch_size=8",
    "--image_size=64",
    f"--max_iters={steps}",
  ]
  if delg:
    command.append("--delg_global_features")
  if ours:
    command.append(f"--num_classes={num_classes}")
  return command


def section_train(args, table, work, ref_env, num_classes):
  data = tfrecords(work)
  counter = iter(range(10**6))
  ref_train_env = dict(ref_env)
  if num_classes != 81313:
    ref_train_env["REF_NUM_CLASSES"] = str(num_classes)

  for delg in [model == "delg" for model in args.models.split(",")]:
    name = "DELG + autoencoder" if delg else "DELF + autoencoder"

    def per_step(ours: bool, delg=delg):
      walls, cpus, peak = [], [], 0.0
      for steps in (args.short_steps, args.long_steps):
        logdir = work / f"train_{next(counter)}"
        if ours:
          command = _train_command(
            OURS_PY, "scripts/train.py", data, logdir, steps, delg, num_classes, True
          )
          env = our_env()
        else:
          command = _train_command(
            ref_env["PY"], f"{ref_env['REF']}/train_n.py", data, logdir, steps, delg,
            num_classes, False,
          )  # fmt: skip
          env = ref_train_env
        wall, rss = timed(command, env, log=str(logdir) + ".log")
        walls.append(wall)
        cpus.append(LAST_CPU_SECONDS[0])
        peak = max(peak, rss)
        subprocess.run(["rm", "-rf", str(logdir)], check=False)
      steps = args.long_steps - args.short_steps
      return (walls[1] - walls[0]) / steps, (cpus[1] - cpus[0]) / steps, peak

    ours, ref = alternate(args.repeats, lambda: per_step(True), lambda: per_step(False))
    for index, unit in ((0, "s/step (wall)"), (1, "CPU s/step")):
      table.add(
        f"training {name}, {num_classes} classes, 64 px, batch 8",
        unit,
        [r[index] for r in ours],
        [r[index] for r in ref],
        [r[2] for r in ours],
        [r[2] for r in ref],
        f"{args.repeats} pairs, steps {args.short_steps} vs {args.long_steps}",
      )


def _write_views(directory: pathlib.Path, count: int) -> list[str]:
  import numpy as np
  from PIL import Image

  from delf.data import demo

  sources = demo.landmark_source_images()
  rng = np.random.default_rng(0)
  paths = []
  for i in range(count):
    view, _ = demo.render_landmark_view(sources[(i // 2) % len(sources)], rng, (480, 640))
    path = directory / f"image_{i:02d}.jpg"
    Image.fromarray(view).save(path, quality=90)
    paths.append(str(path))
  return paths


def _our_export(path: pathlib.Path, precision: str, batch_signature: bool) -> None:
  code = (
    "import tensorflow as tf, sys\n"
    "from delf.export import exporter, modules\n"
    "from delf.model.delf_model import Delf\n"
    "tf.keras.utils.set_random_seed(0)\n"
    "model = Delf(block3_strides=True, use_dim_reduction=False, num_classes=None)\n"
    f"served = exporter.reduced_precision_model(model, {precision!r}) "
    f"if {precision!r} != 'float32' else model\n"
    "module = modules.LocalFeatureModule(served, True, 1.0)\n"
    "signatures = {'serving_default': module.ExtractFeatures.get_concrete_function()}\n"
    f"if {batch_signature}:\n"
    "  signatures[modules.BATCH_SIGNATURE] = module.ExtractFeaturesBatch.get_concrete_function()\n"
    f"tf.saved_model.save(module, {str(path)!r}, signatures=signatures)\n"
  )
  timed([OURS_PY, "-c", code], our_env())


def _reference_export(work: pathlib.Path, ref_env: dict) -> pathlib.Path:
  export = work / "ref_export"
  if export.exists():
    return export
  data = tfrecords(work)
  logdir = work / "ref_export_training"
  env = dict(ref_env, REF_NUM_CLASSES="8")
  command = _train_command(
    ref_env["PY"], f"{ref_env['REF']}/train_n.py", data, logdir, 1, False, 8, False
  )
  # Trained with the autoencoder (the reference's training crashes without it), exported
  # without (its autoencoder local export is broken, KB-29): 1024-D block3 descriptors.
  timed(command, env, log=str(logdir) + ".log")
  timed(
    [
      ref_env["PY"],
      f"{ref_env['REF_DELF']}/training/model/export_local_model.py",
      f"--ckpt_path={logdir}/delf_weights",
      f"--export_path={export}",
      "--nouse_autoencoder",
      "--block3_strides",
    ],
    env,
    log=str(export) + ".log",
  )
  return export


def _config(path: pathlib.Path, model: pathlib.Path) -> str:
  path.write_text(
    f'model_path: "{model}"\n'
    + "".join(f"image_scales: {s}\n" for s in SCALES)
    + "max_image_size: -1\nis_tf2_exported: true\n"
    + "delf_local_config { use_pca: false max_feature_num: 1000 score_threshold: 0.0 }\n"
  )
  return str(path)


def section_extract(args, table, work, ref_env):
  images = work / "views"
  images.mkdir(exist_ok=True)
  paths = _write_views(images, args.num_images)
  lists = {}
  for count in (1, len(paths)):
    lists[count] = work / f"list_{count}.txt"
    lists[count].write_text("\n".join(paths[:count]) + "\n")
  ref_model = _reference_export(work, ref_env)
  ours_models = {}
  for precision, batch in (("float32", False), ("bfloat16", True)):
    model = work / f"ours_{precision}"
    if not model.exists():
      _our_export(model, precision, batch)
    ours_models[precision] = model
  counter = iter(range(10**6))

  def per_image(python, script, config, env, extra=()):
    walls, cpus, peak = [], [], 0.0
    for count in (1, len(paths)):
      output = work / f"features_{next(counter)}"
      wall, rss = timed(
        [
          python,
          script,
          f"--config_path={config}",
          f"--list_images_path={lists[count]}",
          f"--output_dir={output}",
          *extra,
        ],
        env,
        log=str(output) + ".log",
      )
      walls.append(wall)
      cpus.append(LAST_CPU_SECONDS[0])
      peak = max(peak, rss)
    count = len(paths) - 1
    return (walls[1] - walls[0]) / count, (cpus[1] - cpus[0]) / count, peak

  ref_config = _config(work / "ref_config.pbtxt", ref_model)
  variants = [
    ("float32", ours_models["float32"], ()),
    ("bfloat16", ours_models["bfloat16"], ()),
    ("bfloat16, --batch_size=4", ours_models["bfloat16"], ("--batch_size=4",)),
  ]
  configs = [_config(work / f"config_{i}.pbtxt", model) for i, (_, model, _) in enumerate(variants)]
  ours = {label: [] for label, _, _ in variants}
  ref = []
  # Each round: the reference, then our three variants (reversed order on odd rounds).
  for round_index in range(args.repeats):
    jobs = [(None, lambda: per_image(
      ref_env["PY"], f"{ref_env['REF_DELF']}/examples/extract_features.py", ref_config, ref_env
    ))]  # fmt: skip
    for (label, _, extra), config in zip(variants, configs):
      jobs.append((label, lambda config=config, extra=extra: per_image(
        OURS_PY, "scripts/extract_features.py", config, our_env(), extra
      )))  # fmt: skip
    if round_index % 2:
      jobs.reverse()
    for label, job in jobs:
      (ref if label is None else ours[label]).append(job())
  for label, _, _ in variants:
    for index, unit in ((0, "s/image (wall)"), (1, "CPU s/image")):
      table.add(
        f"DELF 7-scale extraction 640x480, 1000 features, ours {label} (reference float32)",
        unit,
        [r[index] for r in ours[label]],
        [r[index] for r in ref],
        [r[2] for r in ours[label]],
        [r[2] for r in ref],
        f"{args.repeats} rounds, {len(paths)} vs 1 images",
      )


def section_match(args, table, work, ref_env):
  views = work / "views"
  views.mkdir(exist_ok=True)
  paths = _write_views(views, 2)
  model = work / "ours_float32"
  if not model.exists():
    _our_export(model, "float32", False)
  config = _config(work / "match_config.pbtxt", model)
  (work / "match_list.txt").write_text("\n".join(paths) + "\n")
  features = work / "match_features"
  timed(
    [
      OURS_PY,
      "scripts/extract_features.py",
      f"--config_path={config}",
      f"--list_images_path={work / 'match_list.txt'}",
      f"--output_dir={features}",
    ],
    our_env(),
  )
  flags = [
    f"--image_1_path={paths[0]}",
    f"--image_2_path={paths[1]}",
    f"--features_1_path={features}/image_00.delf",
    f"--features_2_path={features}/image_01.delf",
  ]
  counter = iter(range(10**6))

  def run(python, script, env):
    log = work / f"match_{next(counter)}.log"
    wall, rss = timed([python, script, *flags, f"--output_image={log}.png"], env, log=str(log))
    inliers = [line for line in log.read_text().splitlines() if "inliers" in line]
    return wall, rss, inliers[-1] if inliers else "?"

  ours, ref = alternate(
    args.repeats,
    lambda: run(OURS_PY, "scripts/match_images.py", our_env()),
    lambda: run(ref_env["PY"], f"{ref_env['REF_DELF']}/examples/match_images.py", ref_env),
  )
  table.add(
    "match_images.py, whole process, 1000 x 1024-D pair",
    "s",
    [w for w, _, _ in ours],
    [w for w, _, _ in ref],
    [m for _, m, _ in ours],
    [m for _, m, _ in ref],
    f"{args.repeats} pairs; ours '{ours[0][2]}', reference '{ref[0][2]}'",
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sections", default="build,train8,train81313,extract,match")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--models", default="delf,delg", help="training sections: delf, delg or both")
  parser.add_argument("--ref", default="/work/refenv", help="the reference's setup.sh directory")
  parser.add_argument("--short_steps", type=int, default=5)
  parser.add_argument("--long_steps", type=int, default=25)
  parser.add_argument("--num_images", type=int, default=10)
  parser.add_argument("--workdir", default=None, help="keep data and exports here")
  args = parser.parse_args()
  ref_env = reference_env(args.ref)
  table = Table()
  with tempfile.TemporaryDirectory(prefix="delf_side_by_side_") as tmp:
    work = pathlib.Path(args.workdir or tmp)
    work.mkdir(parents=True, exist_ok=True)
    print(f"work directory {work}; load average {os.getloadavg()}", flush=True)
    for section in args.sections.split(","):
      start = time.perf_counter()
      print(f"[{section}]", flush=True)
      if section == "build":
        section_build(args, table, work, ref_env)
      elif section.startswith("train"):
        section_train(args, table, work, ref_env, int(section[5:]))
      elif section == "extract":
        section_extract(args, table, work, ref_env)
      elif section == "match":
        section_match(args, table, work, ref_env)
      else:
        raise SystemExit(f"unknown section {section!r}")
      print(f"[{section}] {time.perf_counter() - start:.0f} s", flush=True)
  print(f"load average at the end {os.getloadavg()}")
  table.print()


if __name__ == "__main__":
  main()
