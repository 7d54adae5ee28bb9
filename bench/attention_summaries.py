"""Benchmark: cost of the TensorBoard attention overlays per training report (issue 11).

Usage:
  .venv/bin/python bench/attention_summaries.py [--sizes 64,321,512] [--repeats 10]

Times ``delf.training.summaries.write_images`` (the reference's ``batch_images`` and
``batch_attention`` plus our ``batch_attention_overlay``) against the reference's two
image summaries alone, on 3 random images of each size with their block3 attention map
(stride 16, as with ``block3_strides``' default at training time: size / 16 cells a side,
rounded up), written to a temporary event file. Medians over the repeats, after one
warm-up call (imports, colour table).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def median_ms(function, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1000


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="64,321,512")
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()

  import tensorflow as tf

  from delf.training import summaries

  writer = tf.summary.create_file_writer(tempfile.mkdtemp(prefix="attention_bench_"))
  print("| image size | reference image summaries | with batch_attention_overlay | added |")
  print("| --- | --- | --- | --- |")
  for size in (int(s) for s in args.sizes.split(",")):
    cells = math.ceil(size / 16)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, [3, size, size, 3]).astype(np.float32))
    prob = tf.constant(rng.uniform(0, 3, [3, cells, cells, 1]).astype(np.float32))

    def reference(images=images, prob=prob):
      tf.summary.image("batch_images", (images + 1.0) / 2.0, 1, 3)
      tf.summary.image("batch_attention", prob / tf.reduce_max(prob + 1e-3), 1, 3)

    def ours(images=images, prob=prob):
      summaries.write_images(images, prob, 1)

    with writer.as_default():
      reference()
      ours()
      reference_ms = median_ms(reference, args.repeats)
      ours_ms = median_ms(ours, args.repeats)
    print(
      f"| {size} px | {reference_ms:.1f} ms | {ours_ms:.1f} ms | {ours_ms - reference_ms:.1f} ms |"
    )


if __name__ == "__main__":
  main()
