"""Random weights of a full-size model, written in one of the reference's layouts.

  python -m fidelity.our_side.write_initial_weights --model=DELF|DELG --num_classes=N
      --seed=S [--no_autoencoder] (--step=K --directory=<dir> | --weights_prefix=<prefix>)

With ``--directory`` a training checkpoint ``<dir>/ckpt-<K>`` (both runs of the
training-step check start from it: the reference resumes from it, ours gets it
as ``--init_from``); with ``--weights_prefix`` the reference's ``delf_weights``
(Keras ``save_weights`` layout), which its export scripts load. Either way the
reference reads a file our writer made.
"""

from __future__ import annotations

import argparse


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", choices=["DELF", "DELG"], required=True)
  parser.add_argument("--num_classes", type=int, required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no_autoencoder", action="store_true")
  parser.add_argument("--step", type=int, default=0)
  parser.add_argument("--directory")
  parser.add_argument("--weights_prefix")
  args = parser.parse_args()
  if bool(args.directory) == bool(args.weights_prefix):
    parser.error("give exactly one of --directory and --weights_prefix")

  import keras

  from delf.model import reference_weights
  from delf.model.delf_model import Delf, Delg

  keras.utils.set_random_seed(args.seed)
  cls = Delg if args.model == "DELG" else Delf
  model = cls(use_dim_reduction=not args.no_autoencoder, num_classes=args.num_classes)
  if args.directory:
    prefix = reference_weights.write_reference_training_checkpoint(model, args.directory, args.step)
  else:
    prefix = reference_weights.write_reference_weights(model, args.weights_prefix)
  print(f"wrote {prefix}")


if __name__ == "__main__":
  main()
