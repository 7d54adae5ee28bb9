r"""Dataset build throughput and memory: 1 worker vs all workers, at two dataset sizes.

Usage:
  .venv/bin/python -m bench.build_dataset [--sizes=1000,4000] [--workers=1,2]
      [--image_width=320 --image_height=240] [--work_dir=/tmp/delf_bench_build]

Makes demo GLDv2 data (real photos, 320x240 JPEGs as in spec/performance.md §1), runs
``python -m scripts.build_image_dataset`` in clean mode with a train/validation split and
4 shards, and prints a table: images/s inside the build (excluding interpreter start-up; the
reference: ~58 images/s excluding its TF import), wall time of the whole command, and the
peak RSS of the whole process tree (parent + workers, sampled from /proc every 20 ms) and of
the largest single process, and the CPU seconds of all processes (user + sys; compare these
when other jobs share the cores). Shards of every run are compared byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tree_rss_kb(pid: int) -> int:
  total = 0
  stack = [pid]
  while stack:
    p = stack.pop()
    try:
      with open(f"/proc/{p}/status") as f:
        for line in f:
          if line.startswith("VmRSS:"):
            total += int(line.split()[1])
      for task in os.listdir(f"/proc/{p}/task"):
        with open(f"/proc/{p}/task/{task}/children") as f:
          stack += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
      continue
  return total


def _run_build(dataset: pathlib.Path, output: pathlib.Path, workers: int) -> dict:
  command = [
    "/usr/bin/time",
    "-v",
    sys.executable,
    "-m",
    "scripts.build_image_dataset",
    f"--train_clean_csv_path={dataset / 'train' / 'train_clean.csv'}",
    f"--train_directory={dataset / 'train'}/*/*/*/",
    f"--output_directory={output}",
    "--num_shards=4",
    "--generate_train_validation_splits",
    "--validation_split_size=0.2",
    f"--num_workers={workers}",
  ]
  start = time.monotonic()
  process = subprocess.Popen(
    command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  peak = [0]

  def sample():
    while process.poll() is None:
      peak[0] = max(peak[0], _tree_rss_kb(process.pid))
      time.sleep(0.02)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  stdout, stderr = process.communicate()
  wall = time.monotonic() - start
  sampler.join()
  if process.returncode:
    raise RuntimeError(stderr[-2000:])
  rate = float(re.search(r"\(([\d.]+) images/s, \d+ workers\)", stdout).group(1))
  written = int(re.search(r"Wrote (\d+) images", stdout).group(1))
  max_single = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
  cpu = float(re.search(r"User time \(seconds\): ([\d.]+)", stderr).group(1))
  cpu += float(re.search(r"System time \(seconds\): ([\d.]+)", stderr).group(1))
  digest = hashlib.sha256()
  for shard in sorted(output.glob("*-of-*")):
    digest.update(shard.read_bytes())
  return {
    "rate": rate,
    "written": written,
    "wall": wall,
    "cpu": cpu,
    "tree_mb": peak[0] / 1024,
    "single_mb": max_single / 1024,
    "digest": digest.hexdigest(),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="1000,4000")
  parser.add_argument("--workers", default=f"1,{os.cpu_count()}")
  parser.add_argument("--image_width", type=int, default=320)
  parser.add_argument("--image_height", type=int, default=240)
  parser.add_argument("--work_dir", default="/tmp/delf_bench_build")
  parser.add_argument("--repeats", type=int, default=1)
  args = parser.parse_args()
  sys.path.insert(0, str(REPO))
  from delf.data import demo

  work = pathlib.Path(args.work_dir)
  rows = []
  for size in [int(s) for s in args.sizes.split(",")]:
    num_landmarks = 20
    per_landmark = -(-size // num_landmarks)
    dataset = work / f"data_{size}"
    if not (dataset / "train" / "train_clean.csv").exists():
      t = time.monotonic()
      demo.make_demo_dataset(
        dataset,
        num_landmarks=num_landmarks,
        images_per_landmark=per_landmark,
        image_size=(args.image_height, args.image_width),
        index_images_per_landmark=0,
        test_images_per_landmark=0,
        num_noisy=0,
        num_distractors=0,
      )
      print(f"made {size} demo images in {time.monotonic() - t:.1f} s", flush=True)
    digests = set()
    for workers in [int(w) for w in args.workers.split(",")]:
      for _ in range(args.repeats):
        result = _run_build(dataset, work / f"out_{size}_{workers}", workers)
        digests.add(result["digest"])
        rows.append((size, workers, result))
        print(f"size {size} workers {workers}: {result}", flush=True)
    assert len(digests) == 1, "shards differ between worker counts"

  print()
  print(f"load average at the end: {os.getloadavg()}")
  print(
    "| images | workers | images/s (in build) | wall s | CPU s (all processes) "
    "| peak RSS tree MB | max process MB |"
  )
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for _size, workers, r in rows:
    print(
      f"| {r['written']} | {workers} | {r['rate']:.0f} | {r['wall']:.2f} | {r['cpu']:.2f} | "
      f"{r['tree_mb']:.0f} | {r['single_mb']:.0f} |"
    )
  print("\nShards identical across worker counts: yes")


if __name__ == "__main__":
  main()
