"""Forward pass: a checkpoint written by the reference's train.py, imported, gives its outputs.

Weights: the reference's ``delf_weights`` after the training-step check (DELF
and DELG, both with the autoencoder). Inputs: two 96x128 images in [-1, 1)
and labels. Compared (inference mode): global descriptor, block3, the
autoencoder's reduced and expanded features, attention probabilities and
pooled features, attention logits and descriptor logits (DELG: cosine logits,
and with the ArcFace margin).

The attention of this state of the reference takes its scores from the
reconstructed features and pools block3, the reverse of the spec's choice
(KB-17): its attention outputs are compared with its own attention layer run
with the spec's wiring, and the difference to its as-is wiring is shown as
information.
"""

from __future__ import annotations

import os

import numpy as np

from fidelity.compare import Row, relative_difference, worst
from fidelity.runner import Context, side_by_side

TOLERANCE = 1e-5
_ATTENTION = ("attention_prelogits", "attention_prob", "attn_logits")


def run(ctx: Context, ref_logdirs: dict[str, str], num_classes: int) -> list[Row]:
  rng = np.random.default_rng(7)
  images = ctx.path("forward", "images.npy")
  labels = ctx.path("forward", "labels.npy")
  np.save(images, rng.uniform(-1.0, 1.0, size=(2, 96, 128, 3)).astype(np.float32))
  np.save(labels, np.array([0, num_classes - 1], np.int64))

  def args(kind: str, side: str) -> list[str]:
    return [
      f"--model={kind}",
      "--use_autoencoder",
      f"--num_classes={num_classes}",
      f"--weights={os.path.join(ref_logdirs[kind], 'delf_weights')}",
      f"--images={images}",
      f"--labels={labels}",
      f"--output={ctx.path('forward', f'{kind}_{side}.npz')}",
    ]

  def reference():
    for kind in ref_logdirs:
      ctx.ref_side(f"forward_{kind}_reference", "forward_pass.py", args(kind, "reference"))

  def ours():
    for kind in ref_logdirs:
      ctx.our_side(f"forward_{kind}_ours", "forward_pass", args(kind, "ours"))

  side_by_side(reference, ours)
  rows = []
  for kind in ref_logdirs:
    with np.load(ctx.path("forward", f"{kind}_reference.npz")) as f:
      theirs = {k: f[k] for k in f.files}
    with np.load(ctx.path("forward", f"{kind}_ours.npz")) as f:
      ours_ = {k: f[k] for k in f.files}
    rows += compare(kind, theirs, ours_)
  return rows


def compare(kind: str, theirs: dict, ours: dict) -> list[Row]:
  label = f"forward pass {kind} (+autoencoder, reference checkpoint)"
  plain = {k: v for k, v in theirs.items() if not k.startswith("kb17/") and k not in _ATTENTION}
  diff, name = worst({k: ours.get(k) for k in plain if k in ours}, plain)
  rows = [Row(f"{label}: descriptors, block3, autoencoder, desc logits", diff, TOLERANCE, name)]
  spec_wiring = {k: theirs[f"kb17/{k}"] for k in _ATTENTION}
  diff, name = worst({k: ours[k] for k in _ATTENTION}, spec_wiring)
  rows.append(Row(f"{label}: attention (reference layer, KB-17 wiring)", diff, TOLERANCE, name))
  as_is = max(relative_difference(ours[k], theirs[k]) for k in _ATTENTION)
  rows.append(
    Row(
      f"{label}: attention, reference wiring as is",
      as_is,
      None,
      "differs by design (KB-17): it scores the reconstructed features and pools block3",
    )
  )
  return rows
