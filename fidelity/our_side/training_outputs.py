"""Reads the results of one training step on both sides into comparable files.

  python -m fidelity.our_side.training_outputs --model=DELF|DELG --num_classes=N
      --initial=<ckpt> --reference_logdir=<dir> --reference_step=K
      --our_logdir=<dir> --our_step=1 --output=<prefix>

Writes ``<prefix>.npz`` with, per side, the weights by layer path
(``initial/``, ``reference/``, ``ours/``), the SGD momentum (``reference_momentum/``,
``ours_momentum/``), the TensorBoard scalars of the step (``*_scalars/<tag>``)
and the logged batch images (``*_images/<tag>``, decoded PNG).
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np


def _weights(model, path: str) -> dict[str, np.ndarray]:
  from delf.model import reference_weights
  from delf.model.weight_sources import inspect_weights, load_weights

  source = inspect_weights(path)
  load_weights(model, source)
  return {p: np.array(v.numpy()) for p, v in reference_weights.model_variables(model).items()}


def _reference_momentum(model, prefix: str) -> dict[str, np.ndarray]:
  from delf.model import reference_weights
  from delf.model.checkpoint_contents import CheckpointContents

  to_ours = reference_weights.reference_to_layer_paths(model)
  momentum = reference_weights.read_momentum(CheckpointContents(prefix))
  return {to_ours[path]: value for path, value in momentum.items()}


def _our_momentum(model, prefix: str) -> dict[str, np.ndarray]:
  """Keras 3 SGD names each momentum ``<optimizer>/<variable path with _>_momentum``."""
  from delf.model import reference_weights
  from delf.model.checkpoint_contents import CheckpointContents

  contents = CheckpointContents(prefix)
  by_name = {s.full_name: p for p, s in contents.variables.items() if p.startswith("optimizer/")}
  momentum = {}
  for variable in model.trainable_variables:
    path = reference_weights.layer_path(variable)
    suffix = "/" + path.replace("/", "_") + "_momentum"
    names = [n for n in by_name if n.endswith(suffix)]
    if len(names) == 1:
      momentum[path] = contents.read(by_name[names[0]])
  return momentum


def _summaries(logdir: str, step: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  import tensorflow as tf

  scalars, images = {}, {}
  for path in sorted(glob.glob(os.path.join(logdir, "train_logs", "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      if event.step != step:
        continue
      for value in event.summary.value:
        tensor = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
        if value.HasField("simple_value"):
          scalars[value.tag] = float(value.simple_value)
        elif tensor is not None and tensor.dtype != object and tensor.size == 1:
          scalars[value.tag] = float(tensor.reshape(()))
        elif tensor is not None and tensor.dtype == object:
          decoded = [tf.io.decode_png(png).numpy() for png in tensor[2:]]
          images[value.tag] = np.stack(decoded) if decoded else np.zeros([0])
  return scalars, images


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", choices=["DELF", "DELG"], required=True)
  parser.add_argument("--num_classes", type=int, required=True)
  parser.add_argument("--initial", required=True)
  parser.add_argument("--reference_logdir", required=True)
  parser.add_argument("--reference_step", type=int, required=True)
  parser.add_argument("--our_logdir", required=True)
  parser.add_argument("--our_step", type=int, required=True)
  parser.add_argument("--output", required=True)
  args = parser.parse_args()

  from delf.model.delf_model import Delf, Delg

  cls = Delg if args.model == "DELG" else Delf
  model = cls(use_dim_reduction=True, num_classes=args.num_classes)
  reference_ckpt = os.path.join(
    args.reference_logdir, "delf_tf2-ckpt", f"ckpt-{args.reference_step}"
  )
  our_ckpt = os.path.join(args.our_logdir, "delf_tf2-ckpt", f"ckpt-{args.our_step}")
  arrays = {}
  for side, path in (("initial", args.initial), ("reference", reference_ckpt), ("ours", our_ckpt)):
    arrays.update({f"{side}/{k}": v for k, v in _weights(model, path).items()})
  arrays.update(
    {f"reference_momentum/{k}": v for k, v in _reference_momentum(model, reference_ckpt).items()}
  )
  arrays.update({f"ours_momentum/{k}": v for k, v in _our_momentum(model, our_ckpt).items()})
  for side, logdir, step in (
    ("reference", args.reference_logdir, args.reference_step),
    ("ours", args.our_logdir, args.our_step),
  ):
    scalars, images = _summaries(logdir, step)
    arrays.update({f"{side}_scalars/{k}": np.float64(v) for k, v in scalars.items()})
    arrays.update({f"{side}_images/{k}": v for k, v in images.items()})
  np.savez(args.output, **arrays)
  print(f"wrote {len(arrays)} arrays to {args.output}.npz")


if __name__ == "__main__":
  main()
