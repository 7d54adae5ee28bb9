"""One training step: same weights, same batch -> same losses, weights and momentum.

Both start from one file: random initial weights of the full model written by
us in the reference's training layout (``delf_tf2-ckpt/ckpt-99``). The
reference's unchanged ``train.py`` resumes from it and runs step 100 of
``--max_iters=100`` with ``--initial_lr=1``, i.e. at learning rate
``1 * (1 - 99/100) = 0.01``; the step count 100 makes it log its losses and
the batch (it logs every 100 steps). Ours starts a new run from the same file
(``--init_from``) and runs one step at ``--initial_lr=0.01``. Augmentation off,
one train shard, same seed: the same first batch (checked on the logged images).

Compared: the batch (3 logged images, pixel range), the three losses, every
updated weight (BN moving statistics included), the SGD momentum, and the
other logged statistics. Both momenta start at zero, so after the step each is
the update itself, ``-lr * clipped gradient``: that row checks the gradients,
loss weights and clipping. (The update is not taken as new minus initial
weights: float32 weights near 0.05 hold it only to ~1e-3 relative.) Both sides use the autoencoder: the reference cannot train without it
(KB-61). Its attention wiring is given the spec's choice (KB-17, see
``reference_side/kb17.py``); everything else of its train.py runs unchanged.
"""

from __future__ import annotations

import os
import re
import shutil

import numpy as np

from fidelity.compare import Row, relative_difference, worst
from fidelity.runner import Context, side_by_side

INITIAL_STEP = 99
BATCH_SIZE = 4
IMAGE_SIZE = 64
TOLERANCE = 1e-4
KINDS = ("DELF", "DELG")
# Logged values that are not functions of the step's inputs.
_NOT_COMPARED = ("global_steps_per_sec",)
_LOSSES = ("loss/desc/crossentropy", "loss/attn/crossentropy", "loss/recon/mse")
# Biases of the convolutions that feed a batch norm (every backbone conv, the attention's
# first conv): BN subtracts the batch mean, so their gradient is zero and what either side
# computes for them is rounding noise (~1e-12), meaningless relative to itself. They get
# their own row: both sides' updates must be negligible next to the largest update.
_ZERO_GRADIENT = re.compile(
  r"^(backbone/(conv1|res\w+/res\w+_branch\w+)|attention/attn_conv1)/bias$"
)
ZERO_GRADIENT_TOLERANCE = 1e-6


def _common_flags(kind: str, train: str, validation: str) -> list[str]:
  flags = [
    f"--train_file_pattern={train}",
    f"--validation_file_pattern={validation}",
    f"--batch_size={BATCH_SIZE}",
    f"--image_size={IMAGE_SIZE}",
    "--nouse_augmentation",
    "--seed=0",
  ]
  return [*flags, "--delg_global_features"] if kind == "DELG" else flags


def run(ctx: Context, train: str, validation: str, num_classes: int) -> tuple[list[Row], dict]:
  """Returns the rows and ``{kind: reference logdir}`` (its delf_weights feed later checks)."""
  initial = {k: ctx.path("train", k, "initial", "delf_tf2-ckpt") for k in KINDS}
  ref_logdir = {k: ctx.path("train", k, "reference") for k in KINDS}
  our_logdir = {k: ctx.path("train", k, "ours") for k in KINDS}

  def write_initial(kind: str):
    def job():
      ctx.our_side(
        f"train_{kind}_initial",
        "write_initial_weights",
        [
          f"--model={kind}",
          f"--num_classes={num_classes}",
          f"--seed={len(kind)}",
          f"--step={INITIAL_STEP}",
          f"--directory={initial[kind]}",
        ],
      )

    return job

  side_by_side(write_initial("DELF"), write_initial("DELG"))
  for kind in KINDS:
    shutil.copytree(initial[kind], os.path.join(ref_logdir[kind], "delf_tf2-ckpt"))

  def reference():
    for kind in KINDS:
      ctx.ref_side(
        f"train_{kind}_reference",
        "run_script.py",
        [
          "--kb17",
          ctx.reference.helper("train_n.py"),
          *_common_flags(kind, train, validation),
          "--dataset_version=gld_v2_clean",
          f"--logdir={ref_logdir[kind]}",
          f"--max_iters={INITIAL_STEP + 1}",
          "--initial_lr=1.0",
        ],
        extra_env={"REF_NUM_CLASSES": str(num_classes)},
      )

  def ours():
    for kind in KINDS:
      ctx.ours(
        f"train_{kind}_ours",
        [
          "scripts/train.py",
          *_common_flags(kind, train, validation),
          f"--num_classes={num_classes}",
          f"--logdir={our_logdir[kind]}",
          "--max_iters=1",
          "--initial_lr=0.01",
          f"--init_from={os.path.join(initial[kind], f'ckpt-{INITIAL_STEP}')}",
        ],
      )

  side_by_side(reference, ours)

  def read(kind: str):
    def job():
      ctx.our_side(
        f"train_{kind}_outputs",
        "training_outputs",
        [
          f"--model={kind}",
          f"--num_classes={num_classes}",
          f"--initial={os.path.join(initial[kind], f'ckpt-{INITIAL_STEP}')}",
          f"--reference_logdir={ref_logdir[kind]}",
          f"--reference_step={INITIAL_STEP + 1}",
          f"--our_logdir={our_logdir[kind]}",
          "--our_step=1",
          f"--output={ctx.path('train', kind, 'outputs')}",
        ],
      )

    return job

  side_by_side(read("DELF"), read("DELG"))
  rows = []
  for kind in KINDS:
    with np.load(ctx.path("train", kind, "outputs.npz")) as data:
      rows += compare(kind, {k: data[k] for k in data.files})
  return rows, ref_logdir


def _group(arrays: dict, prefix: str) -> dict[str, np.ndarray]:
  return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def compare(kind: str, arrays: dict) -> list[Row]:
  label = f"training step {kind} (+autoencoder{', ArcFace' if kind == 'DELG' else ''})"
  rows = []
  ref_images, our_images = _group(arrays, "reference_images/"), _group(arrays, "ours_images/")
  ref_scalars, our_scalars = _group(arrays, "reference_scalars/"), _group(arrays, "ours_scalars/")
  batch = [ref_images.get("batch_images"), our_images.get("batch_images")]
  if any(b is None for b in batch) or batch[0].shape != batch[1].shape:
    rows.append(Row(f"{label}: input batch", float("inf"), 0, "logged images missing"))
  else:
    pixels = float(np.max(np.abs(batch[0].astype(int) - batch[1].astype(int))))
    ranges = max(
      abs(ref_scalars.get(t, np.nan) - our_scalars.get(t, np.nan))
      for t in ("image_range/max", "image_range/min")
    )
    rows.append(
      Row(
        f"{label}: input batch (logged images, pixel range)",
        max(pixels, float(ranges)),
        0,
        f"{batch[0].shape[0]} images {batch[0].shape[1]}x{batch[0].shape[2]}",
      )
    )
  losses = {t: (our_scalars.get(t), ref_scalars.get(t)) for t in _LOSSES}
  missing = [t for t, (a, b) in losses.items() if a is None or b is None]
  loss_diff = (
    float("inf") if missing else max(relative_difference(a, b) for a, b in losses.values())
  )
  note = ", ".join(
    f"{t.split('/')[1]} {float(b):.6g}/{float(a):.6g}"
    for t, (a, b) in losses.items()
    if a is not None and b is not None
  )
  rows.append(Row(f"{label}: losses desc, attn, recon", loss_diff, TOLERANCE, f"ref/ours: {note}"))

  initial, ref, ours = (_group(arrays, p) for p in ("initial/", "reference/", "ours/"))
  zero = {k for k in ref if _ZERO_GRADIENT.match(k)}
  kept = sorted(set(ref) - zero)
  diff, name = worst({k: ours.get(k) for k in kept if k in ours}, {k: ref[k] for k in kept})
  changed = sum(not np.array_equal(ref[k], initial.get(k)) for k in kept)
  rows.append(
    Row(
      f"{label}: updated weights",
      diff,
      TOLERANCE,
      f"{len(kept)} variables, {changed} changed by the step; {name}",
    )
  )
  ref_momentum = _group(arrays, "reference_momentum/")
  our_momentum = _group(arrays, "ours_momentum/")
  kept = sorted(set(ref_momentum) - zero)
  diff, name = worst(
    {k: our_momentum[k] for k in kept if k in our_momentum}, {k: ref_momentum[k] for k in kept}
  )
  rows.append(
    Row(f"{label}: weight update = SGD momentum", diff, TOLERANCE, f"{len(kept)} slots; {name}")
  )
  largest = max(float(np.max(np.abs(ref_momentum[k]))) for k in kept)
  noise = max(
    float(np.max(np.abs(side[k]))) / largest
    for side in (ref_momentum, our_momentum)
    for k in zero
    if k in side
  )
  rows.append(
    Row(
      f"{label}: conv biases feeding a BN (zero gradient)",
      noise,
      TOLERANCE,
      f"{len(zero)} biases; largest update on either side / largest update overall",
    )
  )
  common = sorted(
    t for t in set(ref_scalars) & set(our_scalars) if t not in _NOT_COMPARED and t not in _LOSSES
  )
  if common:
    diffs = {t: relative_difference(our_scalars[t], ref_scalars[t]) for t in common}
    name = max(diffs, key=diffs.get)
    rows.append(
      Row(
        f"{label}: other logged values",
        diffs[name],
        TOLERANCE,
        f"{len(common)} tags (attention, sparsity, accuracy, lr); {name}",
      )
    )
  return rows
