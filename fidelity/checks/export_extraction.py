"""Export + extraction: our export of a reference checkpoint vs the reference's export of it.

Checkpoints: the reference's ``delf_weights`` from the training-step check,
and for the DELF local model without the autoencoder (which the reference
cannot train, KB-61) random weights written by our reference-format writer.
Exports: DELG local + global (autoencoder, ``export_local_and_global_model.py``),
the DELF global model (``export_global_model.py``) and the DELF local model
(``export_local_model.py --nouse_autoencoder``), each by both implementations
with the same flags. Each side then extracts with its own
tools and the same config (3 scales, at most 200 local features, no PCA) from
two demo images: ``extract_features.py`` for the local ``.delf`` files, and for
the global descriptors the reference-side helper ``extract_global.py`` and our
``fidelity.our_side.extract_global``. The reference's export runs with the
KB-17 wiring (see ``reference_side/kb17.py``).
"""

from __future__ import annotations

import os

import numpy as np

from fidelity.compare import Row, relative_difference
from fidelity.runner import Context, side_by_side

TOLERANCE = 1e-5
SCALES = (0.5, 0.70710677, 1.0)
_EXPORTS = {
  # name: (script, checkpoint, extra flags, reference needs the KB-17 adapter)
  "delg_local_and_global": ("export_local_and_global_model.py", "DELG", [], True),
  "delf_global": ("export_global_model.py", "DELF", [], False),
  "delf_local": ("export_local_model.py", "DELF_NOAE", ["--nouse_autoencoder"], False),
}
# Extraction runs: (name, export, local features, global descriptors)
_EXTRACTIONS = (
  ("delg", "delg_local_and_global", True, True),
  ("delf_global", "delf_global", False, True),
  ("delf_local", "delf_local", True, False),
)


def _config(model_path: str, local: bool, global_: bool) -> str:
  lines = [f'model_path: "{model_path}"', "is_tf2_exported: true"]
  lines += [f"image_scales: {s}" for s in SCALES]
  lines.append(f"use_local_features: {'true' if local else 'false'}")
  lines.append(f"use_global_features: {'true' if global_ else 'false'}")
  if local:
    lines.append("delf_local_config { use_pca: false max_feature_num: 200 score_threshold: 0.0 }")
  if global_:
    indices = " ".join(f"image_scales_ind: {i}" for i in range(len(SCALES)))
    lines.append(f"delf_global_config {{ use_pca: false {indices} }}")
  return "\n".join(lines) + "\n"


def run(ctx: Context, ref_logdirs: dict[str, str], images: list[str]) -> tuple[list[Row], dict]:
  """Returns the rows and ``{side: directory of the DELG local .delf files}``."""
  image_list = ctx.path("extract", "images.txt")
  with open(image_list, "w") as f:
    f.write("\n".join(images) + "\n")
  checkpoints = {kind: os.path.join(logdir, "delf_weights") for kind, logdir in ref_logdirs.items()}
  checkpoints["DELF_NOAE"] = ctx.path("extract", "delf_noae", "delf_weights")
  ctx.our_side(
    "extract_delf_noae_weights",
    "write_initial_weights",
    [
      "--model=DELF",
      "--num_classes=5",
      "--seed=3",
      "--no_autoencoder",
      f"--weights_prefix={checkpoints['DELF_NOAE']}",
    ],
  )
  exports = {
    (side, name): ctx.path("extract", side, "exports", name)
    for side in ("ref", "ours")
    for name in _EXPORTS
  }
  configs, outputs = {}, {}
  for side in ("ref", "ours"):
    for name, export, local, global_ in _EXTRACTIONS:
      configs[(side, name)] = ctx.path("extract", side, f"{name}.pbtxt")
      with open(configs[(side, name)], "w") as f:
        f.write(_config(exports[(side, export)], local, global_))
      outputs[(side, name)] = ctx.path("extract", side, name)

  def reference():
    for name, (script, kind, flags, kb17) in _EXPORTS.items():
      ctx.ref_side(
        f"export_{name}_reference",
        "run_script.py",
        [
          *(["--kb17"] if kb17 else []),
          ctx.reference.delf_script(f"training/model/{script}"),
          f"--ckpt_path={checkpoints[kind]}",
          f"--export_path={exports[('ref', name)]}",
          *flags,
        ],
      )
    for name, _, local, global_ in _EXTRACTIONS:
      config, output = configs[("ref", name)], outputs[("ref", name)]
      if local:
        ctx.ref(
          f"extract_{name}_local_reference",
          [
            ctx.reference.delf_script("examples/extract_features.py"),
            f"--config_path={config}",
            f"--list_images_path={image_list}",
            f"--output_dir={output}",
          ],
        )
      if global_:
        ctx.ref(
          f"extract_{name}_global_reference",
          [ctx.reference.helper("extract_global.py"), config, image_list, output],
        )

  def ours():
    for name, (script, kind, flags, _) in _EXPORTS.items():
      ctx.ours(
        f"export_{name}_ours",
        [
          f"scripts/{script}",
          f"--ckpt_path={checkpoints[kind]}",
          f"--export_path={exports[('ours', name)]}",
          *flags,
        ],
      )
    for name, _, local, global_ in _EXTRACTIONS:
      config, output = configs[("ours", name)], outputs[("ours", name)]
      if local:
        ctx.ours(
          f"extract_{name}_local_ours",
          [
            "scripts/extract_features.py",
            f"--config_path={config}",
            f"--list_images_path={image_list}",
            f"--output_dir={output}",
          ],
        )
      if global_:
        ctx.our_side(f"extract_{name}_global_ours", "extract_global", [config, image_list, output])

  side_by_side(reference, ours)
  rows = []
  for name, label in (
    ("delg", "DELG local (autoencoder, reference checkpoint)"),
    ("delf_local", "DELF local (no autoencoder, weights by our writer)"),
  ):
    rows += compare_local(outputs[("ref", name)], outputs[("ours", name)], images, label)
  for name, label in (("delg", "DELG"), ("delf_global", "DELF")):
    rows.append(compare_global(outputs[("ref", name)], outputs[("ours", name)], images, label))
  return rows, {"ref": outputs[("ref", "delg")], "ours": outputs[("ours", "delg")]}


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def compare_local(ref_dir: str, our_dir: str, images: list[str], what: str) -> list[Row]:
  from delf import feature_io

  label = f"export + extraction {what}"
  counts, positions, attention, descriptors = 0, 0.0, 0.0, 0.0
  total = 0
  for image in images:
    theirs = feature_io.ReadFromFile(os.path.join(ref_dir, _stem(image) + ".delf"))
    ours = feature_io.ReadFromFile(os.path.join(our_dir, _stem(image) + ".delf"))
    if theirs[0].shape != ours[0].shape:
      counts += 1
      positions = attention = descriptors = float("inf")
      continue
    total += theirs[0].shape[0]
    positions = max(positions, float(np.max(np.abs(theirs[0] - ours[0]), initial=0.0)))
    positions = max(positions, float(np.max(np.abs(theirs[1] - ours[1]), initial=0.0)))
    attention = max(attention, relative_difference(ours[3], theirs[3]))
    descriptors = max(descriptors, relative_difference(ours[2], theirs[2]))
  note = f"{len(images)} images, {total} features"
  return [
    Row(f"{label}: feature count, locations, scales", max(counts, positions), 0, note),
    Row(f"{label}: attention scores", attention, TOLERANCE, note),
    Row(f"{label}: descriptors", descriptors, TOLERANCE, note),
  ]


def compare_global(ref_dir: str, our_dir: str, images: list[str], label: str) -> Row:
  from delf import datum_io

  diff = 0.0
  for image in images:
    theirs = datum_io.ReadFromFile(os.path.join(ref_dir, _stem(image) + ".global"))
    ours = datum_io.ReadFromFile(os.path.join(our_dir, _stem(image) + ".global"))
    diff = max(diff, relative_difference(ours, theirs))
  return Row(
    f"export + extraction {label} global descriptor", diff, TOLERANCE, f"{len(images)} images"
  )
