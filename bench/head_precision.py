r"""Classifier heads at 81,313 classes: float32 vs bfloat16 weights (one training step).

Usage (exclusive CPU lock for figures):
  flock -x /tmp/delf-cpu.lock .venv/bin/python -m bench.head_precision [--classes=81313]

What a step of the two heads costs (DELG: cosine classifier 2048 x C; attention: Dense
1024 x C; batch 8) with float32 weights and momenta (what training uses, also under
--mixed_precision) and with bfloat16 weights and momenta (half the bytes), forward +
backward + fused momentum-SGD update, median of --repeats steps. It also counts how many
weight updates of the first step a bfloat16 weight cannot represent (the update is below
half a bfloat16 unit of the weight, so the weight does not change): the price of storing
the heads in bfloat16 without float32 master weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from delf.model.heads import cosine_logits


def step_function(dtype, classes: int, batch: int):
  rng = np.random.default_rng(0)
  limit = np.sqrt(6 / (2048 + classes))
  desc = tf.Variable(rng.uniform(-limit, limit, (2048, classes)).astype(np.float32), dtype=dtype)
  attn = tf.Variable(rng.uniform(-limit, limit, (1024, classes)).astype(np.float32), dtype=dtype)
  momenta = [tf.Variable(tf.zeros_like(v)) for v in (desc, attn)]
  x = tf.constant(rng.normal(size=(batch, 2048)), tf.float32)
  a = tf.constant(rng.normal(size=(batch, 1024)), tf.float32)
  labels = tf.constant(rng.integers(0, classes, batch))

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      desc_logits = tf.cast(cosine_logits(tf.cast(x, dtype), desc), tf.float32) * 45.25
      attn_logits = tf.cast(tf.matmul(tf.cast(a, dtype), attn), tf.float32)
      loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels, desc_logits)
      ) + tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, attn_logits))
    grads = tape.gradient(loss, [desc, attn])
    for variable, momentum, grad in zip((desc, attn), momenta, grads):
      tf.raw_ops.ResourceApplyKerasMomentum(
        var=variable.handle,
        accum=momentum.handle,
        lr=tf.constant(0.01, dtype),
        grad=grad,
        momentum=tf.constant(0.9, dtype),
      )
    return loss

  return step, (desc, attn)


def lost_updates(classes: int) -> float:
  """Fraction of first-step updates (lr 0.01) that a bfloat16 weight rounds away."""
  step, (desc, attn) = step_function(tf.float32, classes, 8)
  before = [v.numpy() for v in (desc, attn)]
  step()
  lost = total = 0
  for old, variable in zip(before, (desc, attn)):
    new = variable.numpy()
    changed = new != old
    old_bf16 = tf.cast(tf.cast(old, tf.bfloat16), tf.float32).numpy()
    new_bf16 = tf.cast(tf.cast(new, tf.bfloat16), tf.float32).numpy()
    lost += int(np.sum(changed & (new_bf16 == old_bf16)))
    total += int(np.sum(changed))
  return lost / max(total, 1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--classes", type=int, default=81313)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  times = {}
  for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
    step, _ = step_function(dtype, args.classes, 8)
    step()
    samples = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      step().numpy()
      samples.append(time.perf_counter() - start)
    times[name] = statistics.median(samples)
  fraction = lost_updates(args.classes)
  print(f"| head weights | s per head step ({args.classes} classes, batch 8) |")
  print("| --- | --- |")
  for name, value in times.items():
    print(f"| {name} | {value:.3f} |")
  print(f"bfloat16 / float32 time: {times['bfloat16'] / times['float32']:.2f}")
  print(f"first-step updates lost to bfloat16 rounding: {fraction:.1%}")


if __name__ == "__main__":
  main()
