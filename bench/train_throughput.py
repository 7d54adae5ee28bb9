r"""Training throughput (images/s after warm-up) and peak RSS of scripts/train.py's loop.

Usage:
  python -m bench.train_throughput                       # 64 px rows, with and without XLA
  python -m bench.train_throughput --sizes=64,128,321 --jit=both --steps=20
  python -m bench.train_throughput --models=delf --sizes=64 --jit=off

Each row runs in a fresh subprocess (peak RSS is per process, TF import included):
the real ResNet-50, batch 8, 20 classes, default flags otherwise (augmentation,
block3_strides and the autoencoder on), 20 steps; images/s is measured from the
report at step 5 to the last report (steps 6-20, like performance.md §2), so tracing
and XLA compilation are excluded. Data: synthetic 320x240 JPEGs written once to a
temporary directory. Runs unchanged on a GPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time

MODELS = {"delf": False, "delg": True}


def write_data(directory: str, num_classes: int = 20, per_class: int = 8) -> None:
  import numpy as np
  import tensorflow as tf
  from PIL import Image

  rng = np.random.default_rng(0)
  for split, shards in (("train", 2), ("validation", 1)):
    for shard in range(shards):
      path = os.path.join(directory, f"{split}-{shard:05d}-of-{shards:05d}")
      with tf.io.TFRecordWriter(path) as writer:
        for label in range(num_classes):
          for k in range(per_class // shards):
            base = rng.integers(0, 255, size=(1, 1, 3))
            image = np.clip(base + rng.normal(0, 40, size=(240, 320, 3)), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=90)

            def b(v):
              return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

            def i(v):
              return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

            example = tf.train.Example(
              features=tf.train.Features(
                feature={
                  "image/height": i(240),
                  "image/width": i(320),
                  "image/colorspace": b(b"RGB"),
                  "image/channels": i(3),
                  "image/format": b(b"JPEG"),
                  "image/id": b(f"{split}_{label}_{k}".encode()),
                  "image/encoded": b(buffer.getvalue()),
                  "image/class/label": i(label),
                }
              )
            )
            writer.write(example.SerializeToString())


def run_one(args) -> dict:
  """Runs one configuration in this process; prints a JSON line."""
  from delf.training.config import TrainingConfig
  from delf.training.loop import train

  start = time.monotonic()
  config = TrainingConfig(
    logdir=os.path.join(args.workdir, f"log_{args.model}_{args.size}_{args.jit}"),
    train_file_pattern=os.path.join(args.data, "train-*"),
    validation_file_pattern=os.path.join(args.data, "validation-*"),
    batch_size=args.batch_size,
    image_size=args.size,
    max_iters=args.steps,
    num_classes=args.num_classes,
    fused_updates=not args.unfused,
    delg_global_features=MODELS[args.model],
    jit_compile=args.jit == "on",
    mixed_precision=args.mixed_precision,
    report_interval=5,
  )
  result = train(config)
  import resource

  return {
    "images_per_sec": result.steady_images_per_sec,
    "wall_s": time.monotonic() - start,
    # Peak RSS of this process (kB on Linux), TF import included.
    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="delf,delg")
  parser.add_argument("--sizes", default="64")
  parser.add_argument("--jit", default="both", choices=["on", "off", "both"])
  parser.add_argument("--mixed_precision", default="none", choices=["none", "bf16", "fp16"])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--num_classes", type=int, default=20)
  parser.add_argument(
    "--unfused", action="store_true", help="Keras SGD + tf.clip_by_global_norm (the old path)"
  )
  parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--model", default="delf", help=argparse.SUPPRESS)
  parser.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
  parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.single:
    print("BENCH " + json.dumps(run_one(args)), flush=True)
    return

  jits = ["off", "on"] if args.jit == "both" else [args.jit]
  with tempfile.TemporaryDirectory(prefix="delf_train_bench_") as workdir:
    data = os.path.join(workdir, "data")
    os.makedirs(data)
    write_data(data)
    rows = []
    print(f"{'model':6} {'size':>5} {'jit':>4} {'images/s':>9} {'peak RSS GB':>12} {'wall s':>7}")
    for model in args.models.split(","):
      for size in [int(s) for s in args.sizes.split(",")]:
        for jit in jits:
          command = [
            sys.executable, "-m", "bench.train_throughput", "--single", f"--model={model}",
            f"--size={size}", f"--jit={jit}", f"--data={data}", f"--workdir={workdir}",
            f"--steps={args.steps}", f"--batch_size={args.batch_size}",
            f"--mixed_precision={args.mixed_precision}", f"--num_classes={args.num_classes}",
            *(["--unfused"] if args.unfused else []),
          ]  # fmt: skip
          proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
          )
          stdout, _ = proc.communicate()
          line = [text for text in stdout.splitlines() if text.startswith("BENCH ")]
          if proc.returncode or not line:
            print(f"{model:6} {size:5d} {jit:>4} FAILED (exit {proc.returncode})", flush=True)
            continue
          row = json.loads(line[0][6:])
          ips = row["images_per_sec"] or float("nan")
          rss_gb = row["peak_rss_gb"]
          rows.append({"model": model, "size": size, "jit": jit, **row})
          print(
            f"{model:6} {size:5d} {jit:>4} {ips:9.2f} {rss_gb:12.2f} {row['wall_s']:7.1f}",
            flush=True,
          )
    print(json.dumps(rows))


if __name__ == "__main__":
  main()
