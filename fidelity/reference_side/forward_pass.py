"""The reference's forward pass on given weights and images, saved as .npz.

  forward_pass.py --model=DELF|DELG [--use_autoencoder] --num_classes=N
      --weights=<delf_weights prefix> --images=in.npy --labels=in.npy --output=out.npz

Builds the reference's model exactly as its train.py does (block3_strides on),
builds every variable with one forward pass, restores the weights with its
``load_weights`` (and checks that every object was matched), then runs
``global_and_local_forward_pass(training=False)`` and the classifier heads.
With the autoencoder it also runs the reference's attention layer with the
wiring our spec chose (KB-17: scores from block3, pooling the reconstructed
features), saved under ``kb17/...``.
"""

import argparse

import numpy as np
import tensorflow as tf

from delf.python.training.model import delf_model, delg_model


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", choices=["DELF", "DELG"], required=True)
  parser.add_argument("--use_autoencoder", action="store_true")
  parser.add_argument("--num_classes", type=int, required=True)
  parser.add_argument("--weights", required=True)
  parser.add_argument("--images", required=True)
  parser.add_argument("--labels", required=True)
  parser.add_argument("--output", required=True)
  args = parser.parse_args()

  if args.model == "DELG":
    model = delg_model.Delg(
      block3_strides=True, name="DELG", use_dim_reduction=args.use_autoencoder
    )
  else:
    model = delf_model.Delf(
      block3_strides=True, name="DELF", use_dim_reduction=args.use_autoencoder
    )
  model.init_classifiers(args.num_classes)
  images = tf.constant(np.load(args.images))
  labels = tf.constant(np.load(args.labels))

  def forward():
    prelogits, attn_prelogits, attn_prob, blocks, expanded, reduced = (
      model.global_and_local_forward_pass(images, training=False)
    )
    out = {
      "global_descriptor": prelogits,
      "attention_prelogits": attn_prelogits,
      "attention_prob": attn_prob,
      "block3": blocks["block3"],
      "attn_logits": model.attn_classification(attn_prelogits),
    }
    if args.model == "DELG":
      out["desc_logits"] = model.desc_classification(prelogits, labels, training=False)
      out["desc_logits_arcface"] = model.desc_classification(prelogits, labels, training=True)
    else:
      out["desc_logits"] = model.desc_classification(prelogits)
    if args.use_autoencoder:
      out["expanded"], out["reduced"] = expanded, reduced
      feat, prob, _ = model.attention(blocks["block3"], targets=expanded, training=False)
      out["kb17/attention_prelogits"] = feat
      out["kb17/attention_prob"] = prob
      out["kb17/attn_logits"] = model.attn_classification(feat)
    return out

  forward()  # builds every variable
  status = model.load_weights(args.weights)
  status.assert_existing_objects_matched()
  out = {k: np.asarray(v) for k, v in forward().items()}
  np.savez(args.output, **out)
  print(f"wrote {len(out)} arrays to {args.output}")


if __name__ == "__main__":
  main()
