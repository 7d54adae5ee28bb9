"""``--init_from``: start a new training run from existing weights (issue 9).

The weights may be ours (a logdir, ``delf_weights``, ``delf_tf2-ckpt/ckpt-N``
or an export), the reference's (``delf_weights``, ``ckpt-N``) or a SavedModel
exported by the reference, such as the published DELF/DELG models. Everything
but the classifier heads must fit the model the flags build; the heads are
loaded when their class count matches and re-initialised otherwise (one line
says so). The run itself is new: step 0, fresh optimizer state, learning-rate
schedule from the start.
"""

from __future__ import annotations

from delf.model.weight_sources import inspect_weights, load_weights


def initialize_from(model, path: str) -> str:
  """Loads ``path`` into ``model``; prints and returns what was loaded.

  Raises:
    WeightSourceError (a ValueError): not a DELF/DELG checkpoint or SavedModel, or
      another architecture than ``model``; the message says what ``path`` holds.
  """
  source = inspect_weights(path)
  report = load_weights(model, source)
  heads = "with its classifier heads" if report.heads_loaded else "without classifier heads"
  line = (
    f"Initialised from {path}: {source.describe()}; {report.num_variables} variables "
    f"loaded, {heads}; new run from step 0"
  )
  print(line, flush=True)
  if report.heads_note:
    print(report.heads_note, flush=True)
  return line
