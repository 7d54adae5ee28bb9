"""Our forward pass on imported weights, saved with the keys of reference_side/forward_pass.py.

python -m fidelity.our_side.forward_pass --model=DELF|DELG [--use_autoencoder]
    --num_classes=N --weights=<checkpoint> --images=in.npy --labels=in.npy --output=out.npz
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", choices=["DELF", "DELG"], required=True)
  parser.add_argument("--use_autoencoder", action="store_true")
  parser.add_argument("--num_classes", type=int, required=True)
  parser.add_argument("--weights", required=True)
  parser.add_argument("--images", required=True)
  parser.add_argument("--labels", required=True)
  parser.add_argument("--output", required=True)
  args = parser.parse_args()

  import tensorflow as tf

  from delf.model.delf_model import Delf, Delg
  from delf.model.weight_sources import inspect_weights, load_weights

  cls = Delg if args.model == "DELG" else Delf
  model = cls(use_dim_reduction=args.use_autoencoder, num_classes=args.num_classes)
  source = inspect_weights(args.weights)
  report = load_weights(model, source)
  if not report.heads_loaded:
    raise SystemExit(f"heads not loaded: {report.heads_note}")
  print(f"loaded {source.describe()}")
  images = tf.constant(np.load(args.images))
  labels = tf.constant(np.load(args.labels))
  out = model.global_and_local_forward_pass(images, training=False)
  result = {
    "global_descriptor": out["global_descriptor"],
    "attention_prelogits": out["attention_prelogits"],
    "attention_prob": out["attention_prob"],
    "block3": out["block3"],
    "attn_logits": model.attn_logits(out["attention_prelogits"]),
    "desc_logits": model.desc_logits(out["global_descriptor"], labels, training=False),
  }
  if args.model == "DELG":
    result["desc_logits_arcface"] = model.desc_logits(
      out["global_descriptor"], labels, training=True
    )
  if args.use_autoencoder:
    result["expanded"], result["reduced"] = out["expanded"], out["reduced"]
  result = {k: np.asarray(v) for k, v in result.items()}
  np.savez(args.output, **result)
  print(f"wrote {len(result)} arrays to {args.output}")


if __name__ == "__main__":
  main()
