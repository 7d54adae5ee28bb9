"""Exports from a reference checkpoint or a SavedModel (issue 9).

``--ckpt_path`` may name the reference's ``delf_weights``, one of its
``delf_tf2-ckpt/ckpt-N``, or a SavedModel (the reference's, e.g. a published
model, or ours). What the file holds is read from the file itself
(``delf.model.weight_sources``); the export flags are compared with it and a
mismatch is one message naming the model found and the flags that differ,
instead of a list of missing variables. As for our own checkpoints (KB-31), the
export must use every variable of the exported parts: classifier heads and
optimizer state are always left out, attention and autoencoder by a global-only
export, the DELG embedding by a local-only one.
"""

from __future__ import annotations

from delf.export.checkpoint_check import CheckpointMismatchError, check_checkpoint, flag_mismatches
from delf.export.configs import ExportConfig
from delf.model import reference_weights
from delf.model.checkpoint_contents import is_saved_model
from delf.model.weight_sources import REFERENCE, WeightSource, inspect_weights

# Parts of the model (reference_weights.reference_part) each export may leave unused.
_UNUSED_ALWAYS = ("heads",)
_UNUSED_GLOBAL_ONLY = ("attention", "autoencoder")
_UNUSED_LOCAL_ONLY = ("global_head",)


def inspect_export_checkpoint(ckpt_path: str) -> WeightSource:
  """What ``--ckpt_path`` holds.

  Raises:
    FileNotFoundError: nothing there (with the KB-30 hint).
    WeightSourceError: a file that is neither our nor the reference's DELF/DELG
      checkpoint or SavedModel; says what it is.
  """
  if not is_saved_model(ckpt_path):
    check_checkpoint(ckpt_path)
  return inspect_weights(ckpt_path)


def uses_reference_loader(source: WeightSource) -> bool:
  """Reference files are mapped by name; ours (checkpoint or SavedModel) load as before."""
  return source.origin == REFERENCE


def load_reference_and_verify(
  model, source: WeightSource, config: ExportConfig, global_only: bool, local_only: bool
) -> None:
  """Fills the export ``model`` from a reference-format ``source``, using all of its parts.

  Raises:
    CheckpointMismatchError: the flags describe another model than the file holds.
  """
  differing = flag_mismatches(config, source.model_config())
  if differing:
    raise CheckpointMismatchError(
      f"checkpoint {source.path} holds {source.describe()}; export flags that differ: "
      + ", ".join(differing)
    )
  variables = reference_weights.model_variables(model, include_heads=False)
  if global_only:
    variables = {p: v for p, v in variables.items() if p.startswith("backbone/")}
  pairs, mismatch = reference_weights.match_variables(
    variables, source.contents, source.model_prefix
  )
  allowed = _UNUSED_ALWAYS + (_UNUSED_GLOBAL_ONLY if global_only else ())
  allowed += _UNUSED_LOCAL_ONLY if local_only else ()
  used = set(pairs.values())
  unused = [
    path[len(source.model_prefix) :]
    for path in source.contents.paths(source.model_prefix)
    if path not in used
    and reference_weights.reference_part(path[len(source.model_prefix) :]) not in allowed
  ]
  problems = []
  if mismatch:
    problems.append(f"model variables: {mismatch.summary()}")
  if unused:
    shown = ", ".join(unused[:6]) + (f", ... ({len(unused) - 6} more)" if len(unused) > 6 else "")
    problems.append(f"{len(unused)} checkpoint variables the export would ignore: {shown}")
  if problems:
    raise CheckpointMismatchError(
      f"checkpoint {source.path} holds {source.describe()}, which does not fit the model "
      "built from the export flags: " + "; ".join(problems)
    )
  reference_weights.assign_from(variables, source.contents, pairs)
