r"""DELF's two dense classifier heads at 81,313 classes: one training step, three ways.

Usage (exclusive CPU lock for figures):
  flock -x /tmp/delf-cpu.lock .venv/bin/python -m bench.dense_heads [--classes=81313]

A step of the descriptor head (Dense 2048 x C) and the attention head (Dense 1024 x C),
batch 8: forward, backward, global-norm clipping at 10 and the fused momentum-SGD update
(what a training step spends on the heads; the backbone is left out). Variants:

* ``keras``: ``keras.layers.Dense``'s matmul, autodiff gradients, ``tf.linalg.global_norm``;
* ``input_grad``: `delf.model.heads.dense_logits` (input gradient as ``(W g^T)^T``);
* ``input_grad+gram``: also the kernel gradients' norm from ``[B, B]`` Gram matrices
  (`delf.training.optimizer.global_norm_with_dense_kernels`): what training runs.

Prints the median seconds per step over --repeats steps after two warm-up steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from delf.model.heads import dense_logits
from delf.training import optimizer as optimizer_lib


def _step_function(classes: int, batch: int, custom_gradient: bool, gram: bool):
  rng = np.random.default_rng(0)

  def variable(shape):
    return tf.Variable(rng.uniform(-0.01, 0.01, shape).astype(np.float32))

  weights = [variable((2048, classes)), variable((classes,))]
  weights += [variable((1024, classes)), variable((classes,))]
  momenta = [tf.Variable(tf.zeros_like(w)) for w in weights]
  inputs = [tf.constant(rng.normal(size=(batch, d)).astype(np.float32)) for d in (2048, 1024)]
  labels = tf.constant(rng.integers(0, classes, batch))

  def logits_of(x, kernel, bias):
    if custom_gradient:
      return dense_logits(x, tf.convert_to_tensor(kernel), tf.convert_to_tensor(bias))
    return tf.matmul(x, kernel) + bias

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      logits = [logits_of(x, *weights[2 * i : 2 * i + 2]) for i, x in enumerate(inputs)]
      loss = tf.add_n(
        [
          tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, each))
          for each in logits
        ]
      )
    grads = tape.gradient(loss, [*weights, *inputs, *logits])
    # The input gradients flow on into the backbone in training: returned, so kept.
    weight_grads, input_grads, logit_grads = grads[:4], grads[4:6], grads[6:]
    if gram:
      dense = [(inputs[0], logit_grads[0]), None, (inputs[1], logit_grads[1]), None]
      norm = optimizer_lib.global_norm_with_dense_kernels(weight_grads, dense)
    else:
      norm = tf.linalg.global_norm(weight_grads)
    scale = 10.0 * tf.minimum(1.0 / norm, 0.1)
    for variable_, momentum, gradient in zip(weights, momenta, weight_grads):
      tf.raw_ops.ResourceApplyKerasMomentum(
        var=variable_.handle,
        accum=momentum.handle,
        lr=0.01 * scale,
        grad=gradient,
        momentum=tf.constant(0.9),
        use_locking=False,
        use_nesterov=False,
      )
    return norm, input_grads

  return step


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--classes", type=int, default=81313)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  variants = {
    "keras": (False, False),
    "input_grad": (True, False),
    "input_grad+gram": (True, True),
  }
  steps = {
    name: _step_function(args.classes, args.batch, *flags) for name, flags in variants.items()
  }
  times = {name: [] for name in variants}
  for round_ in range(args.repeats + 2):
    for name, step in steps.items():  # interleaved, so drifts hit every variant alike
      start = time.perf_counter()
      step()[0].numpy()
      if round_ >= 2:
        times[name].append(time.perf_counter() - start)
  baseline = statistics.median(times["keras"])
  print(f"\n{args.classes} classes, batch {args.batch}, median of {args.repeats} steps\n")
  print("| variant | s/step | vs keras |")
  print("| --- | --- | --- |")
  for name, values in times.items():
    median = statistics.median(values)
    print(f"| {name} | {median:.3f} | {baseline / median:.2f}x |")


if __name__ == "__main__":
  main()
