r"""float32 vs --mixed_precision=bf16 vs --jit_compile training on the demo data (300 steps).

Usage (exclusive CPU lock for figures):
  flock -x /tmp/delf-cpu.lock .venv/bin/python -m bench.train_precision [--steps=300]

Builds the demo dataset once (make_demo_dataset + build_image_dataset), then runs
`scripts/train.py` as demo.sh does (DELG + autoencoder, real ResNet-50, 64 px, batch 8,
lr 0.01) once per mode, each in its own process, and prints images/s (steady state, from
the run's own progress lines after the first report), the process's peak RSS, and the
loss curve (descriptor, attention, reconstruction) every 50 steps. Same data, same seed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
MODES = {
  "float32": [],
  "mixed bf16": ["--mixed_precision=bf16"],
  "XLA (--jit_compile)": ["--jit_compile"],
  "mixed bf16 + XLA": ["--mixed_precision=bf16", "--jit_compile"],
}
LINE = re.compile(
  r"step (\d+)/\d+: loss desc ([\d.naninf]+) attn ([\d.naninf]+) recon ([\d.naninf]+).*?"
  r"\| ([\d.]+) images/s"
)


def prepare(work: pathlib.Path) -> pathlib.Path:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  root, output = work / "gldv2_dataset", work / "tfrecord"
  subprocess.run(
    [sys.executable, "scripts/make_demo_dataset.py", f"--output_dir={root}", "--seed=0"],
    check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
  )  # fmt: skip
  subprocess.run(
    [
      sys.executable, "scripts/build_image_dataset.py",
      f"--train_csv_path={root}/train/train.csv",
      f"--train_clean_csv_path={root}/train/train_clean.csv",
      f"--train_directory={root}/train/*/*/*/", f"--output_directory={output}",
      "--num_shards=4", "--generate_train_validation_splits", "--validation_split_size=0.2",
    ],
    check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
  )  # fmt: skip
  return output


def run(data: pathlib.Path, logdir: pathlib.Path, steps: int, extra: list[str]):
  command = [
    sys.executable, "scripts/train.py",
    f"--train_file_pattern={data}/train*", f"--validation_file_pattern={data}/validation*",
    f"--logdir={logdir}", "--delg_global_features", "--use_autoencoder", "--image_size=64",
    "--batch_size=8", f"--max_iters={steps}", "--initial_lr=0.01", *extra,
  ]  # fmt: skip
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  start = time.perf_counter()
  process = subprocess.Popen(
    command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  output = process.stdout.read()
  _, status, usage = os.wait4(process.pid, 0)
  wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status):
    raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
  records = [
    (int(m[1]), float(m[2]), float(m[3]), float(m[4]), float(m[5])) for m in LINE.finditer(output)
  ]
  return records, usage.ru_maxrss / 1024 / 1024, wall


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--modes", default=",".join(MODES))
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix="delf_train_precision_") as tmp:
    work = pathlib.Path(tmp)
    data = prepare(work)
    results = {}
    for mode in args.modes.split(","):
      records, peak, wall = run(data, work / f"log_{len(results)}", args.steps, MODES[mode])
      results[mode] = (records, peak, wall)
      steady = [r[4] for r in records[1:]]
      ips = sum(steady) / len(steady) if steady else float("nan")
      print(f"{mode}: {ips:.1f} images/s, peak RSS {peak:.2f} GB, wall {wall:.0f} s", flush=True)
  print()
  print("| mode | images/s (after the first report) | peak RSS | wall | loss desc / attn / recon at "
        "steps " + ", ".join(str(r[0]) for r in next(iter(results.values()))[0]) + " |")  # fmt: skip
  print("| --- | --- | --- | --- | --- |")
  for mode, (records, peak, wall) in results.items():
    steady = [r[4] for r in records[1:]]
    ips = sum(steady) / len(steady) if steady else float("nan")
    curve = "; ".join(f"{r[1]:.2f}/{r[2]:.2f}/{r[3]:.3f}" for r in records)
    print(f"| {mode} | {ips:.1f} | {peak:.2f} GB | {wall:.0f} s | {curve} |")


if __name__ == "__main__":
  main()
