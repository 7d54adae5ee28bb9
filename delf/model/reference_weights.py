"""The reference's checkpoint layout: name mapping, reading and writing (issue 9).

Both implementations give every layer the same Keras name (``conv1``,
``res2a_branch2a``, ``bn2a_branch1``, ``attn_conv1``, ``autoenc_conv2``,
``embedding_layer``, ``att_fc``, ``desc_fc``; training.md §5), but a TF
checkpoint is keyed by Python attribute names, and those differ: the
reference keeps residual blocks as ``l2a`` with ``conv2a``/``bn2a``/
``conv_shortcut``/``bn_shortcut``, strips the ``attn_``/``autoenc_`` prefixes,
calls the heads ``desc_classification``/``attn_classification`` and keeps the
DELG cosine classifier's ``cosine_weights``/``scale_factor`` on the model itself.

``reference_path`` is the whole mapping: it rewrites the layer-name path of one
of our variables (Keras ``Variable.path``, e.g. ``backbone/res2a/res2a_branch1/
kernel``) into the reference's object path (``backbone/l2a/conv_shortcut/
kernel``) with the rules in ``_RULES``. Everything else here (reading the
reference's ``delf_weights``, ``delf_tf2-ckpt/ckpt-N`` and exported
SavedModels; writing checkpoints the reference can read) goes through it.

Where the model sits in each file: Keras ``save_weights`` (``delf_weights``)
at the root, ``tf.train.Checkpoint(model=..., optimizer=...)`` (``ckpt-N``)
under ``model/``, the exports' ``tf.Module`` under ``_model/``. The reference's
SGD (tf_keras) keeps its momentum in ``optimizer/_variables/<i>`` and records
for each one the name ``SGD/m/<full_name of its variable>``, which is how a
momentum is matched to its weight (no reliance on variable order).
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from delf.model.checkpoint_contents import CheckpointContents

# (layer-name path pattern, reference object path). Applied in order, first match wins;
# a path that no rule matches is the same in both implementations (e.g. backbone/conv1,
# backbone/bn_conv1, backbone/embedding_layer, attention/bn_conv1).
_RULES: tuple[tuple[re.Pattern, str], ...] = tuple(
  (re.compile(pattern), replacement)
  for pattern, replacement in (
    # Residual block res<S><B> -> l<S><B>; its layers res<S><B>_branch<X> / bn<S><B>_branch<X>.
    (r"^backbone/res(\d)([a-z])/res\1\2_branch1/", r"backbone/l\1\2/conv_shortcut/"),
    (r"^backbone/res(\d)([a-z])/bn\1\2_branch1/", r"backbone/l\1\2/bn_shortcut/"),
    (r"^backbone/res(\d)([a-z])/res\1\2_branch(2[abc])/", r"backbone/l\1\2/conv\3/"),
    (r"^backbone/res(\d)([a-z])/bn\1\2_branch(2[abc])/", r"backbone/l\1\2/bn\3/"),
    (r"^attention/attn_(conv\d)/", r"attention/\1/"),
    (r"^autoencoder/autoenc_(conv\d)/", r"autoencoder/\1/"),
    # DELG: the cosine classifier's variables are attributes of the reference model.
    (r"^desc_fc/(cosine_weights|scale_factor)$", r"\1"),
    (r"^desc_fc/", r"desc_classification/"),
    (r"^att_fc/", r"attn_classification/"),
  )
)

# First segment of every variable path of our model (what ``layer_path`` normalises to).
_COMPONENTS = ("backbone", "attention", "autoencoder", "desc_fc", "att_fc")
HEAD_COMPONENTS = ("desc_fc", "att_fc")

# Where the model's variables sit in each of the reference's files.
WEIGHTS_PREFIX = ""  # Keras save_weights (delf_weights): the model is the root.
TRAINING_PREFIX = "model/"  # delf_tf2-ckpt/ckpt-N: tf.train.Checkpoint(model=, optimizer=).
SAVED_MODEL_PREFIX = "_model/"  # export_*_model.py: tf.Module attribute _model.


def layer_path(variable) -> str:
  """The variable's path of layer names inside the model, e.g. ``attention/attn_conv1/kernel``.

  Keras puts the names of the enclosing layers in ``Variable.path``; a model
  name in front (when it was built through ``__call__``) is dropped.
  """
  parts = variable.path.split("/")
  for i, part in enumerate(parts):
    if part in _COMPONENTS:
      return "/".join(parts[i:])
  raise ValueError(f"variable {variable.path!r} is not part of a DELF/DELG model")


def reference_path(path: str) -> str:
  """Our layer-name path of a variable -> the reference's object path (the one mapping)."""
  for pattern, replacement in _RULES:
    mapped, count = pattern.subn(replacement, path)
    if count:
      return mapped
  return path


def is_head(path: str) -> bool:
  return path.split("/", 1)[0] in HEAD_COMPONENTS


def model_variables(model, include_heads: bool = True) -> dict[str, object]:
  """``{layer path: variable}`` of every model variable (optionally without the heads)."""
  variables = {}
  for variable in model.variables:
    path = layer_path(variable)
    if include_heads or not is_head(path):
      variables[path] = variable
  return variables


# ---------------------------------------------------------------------------- reading


@dataclasses.dataclass
class Mismatch:
  """What did not fit when matching a model against a reference-format checkpoint."""

  missing: list[str] = dataclasses.field(default_factory=list)  # our paths without a value
  wrong_shape: list[str] = dataclasses.field(default_factory=list)  # "path: ours vs theirs"

  def __bool__(self) -> bool:
    return bool(self.missing or self.wrong_shape)

  def summary(self, limit: int = 4) -> str:
    parts = []
    if self.wrong_shape:
      shown = "; ".join(self.wrong_shape[:limit])
      more = (
        f"; ... ({len(self.wrong_shape) - limit} more)" if len(self.wrong_shape) > limit else ""
      )
      parts.append(f"{len(self.wrong_shape)} with another shape ({shown}{more})")
    if self.missing:
      shown = ", ".join(self.missing[:limit])
      more = f", ... ({len(self.missing) - limit} more)" if len(self.missing) > limit else ""
      parts.append(f"{len(self.missing)} missing ({shown}{more})")
    return "; ".join(parts)


def match_variables(
  variables: dict[str, object], contents: CheckpointContents, prefix: str
) -> tuple[dict[str, str], Mismatch]:
  """Pairs each of ``variables`` with its stored path; returns ``({ours: stored}, mismatch)``."""
  pairs, mismatch = {}, Mismatch()
  for path, variable in variables.items():
    stored = prefix + reference_path(path)
    shape = contents.shape(stored)
    if shape is None:
      mismatch.missing.append(path)
    elif tuple(shape) != tuple(variable.shape):
      mismatch.wrong_shape.append(f"{path} {tuple(variable.shape)} vs {tuple(shape)}")
    else:
      pairs[path] = stored
  return pairs, mismatch


def assign_from(
  variables: dict[str, object], contents: CheckpointContents, pairs: dict[str, str]
) -> None:
  """Assigns every paired variable its stored value (all shapes already checked)."""
  for path, stored in pairs.items():
    variables[path].assign(contents.read(stored))


def read_momentum(
  contents: CheckpointContents, prefix: str = TRAINING_PREFIX
) -> dict[str, np.ndarray]:
  """SGD momentum of a reference ``ckpt-N``, as ``{reference object path: array}``.

  Each ``optimizer/_variables/<i>`` records ``<optimizer>/m/<full_name>``; the
  model variable with that ``full_name`` is found in the same checkpoint, which
  gives its object path (``reference_to_layer_paths`` maps it to ours).
  """
  by_full_name = {}
  for path, stored in contents.variables.items():
    if path.startswith("optimizer/_variables/") and "/m/" in stored.full_name:
      by_full_name[stored.full_name.split("/m/", 1)[1]] = path
  momentum = {}
  for path, stored in contents.variables.items():
    if path.startswith(prefix) and stored.full_name in by_full_name:
      momentum[path[len(prefix) :]] = contents.read(by_full_name[stored.full_name])
  return momentum


def reference_part(path: str) -> str:
  """Which part of the model a reference object path belongs to.

  ``backbone``, ``global_head`` (DELG's embedding), ``attention``,
  ``autoencoder`` or ``heads`` (classifiers: ``desc_classification``,
  ``attn_classification``, ``cosine_weights``, ``scale_factor``).
  """
  if path.startswith(reference_path("backbone/embedding_layer/")):
    return "global_head"
  first = path.split("/", 1)[0]
  return first if first in ("backbone", "attention", "autoencoder") else "heads"


def reference_to_layer_paths(model) -> dict[str, str]:
  """``{reference object path: our layer path}`` for every variable of ``model``."""
  return {reference_path(path): path for path in model_variables(model)}


# ---------------------------------------------------------------------------- writing


def _mirror(model, include_heads: bool):
  """Trackable objects nested like the reference's model, holding ``model``'s variables."""
  import tensorflow as tf

  root = tf.Module()
  for path, variable in model_variables(model, include_heads).items():
    *parents, leaf = reference_path(path).split("/")
    node = root
    for name in parents:
      if not hasattr(node, name):
        setattr(node, name, tf.Module())
      node = getattr(node, name)
    setattr(node, leaf, variable.value)
  return root


def write_reference_weights(model, prefix: str, include_heads: bool = True) -> str:
  """Writes ``model`` as the reference's ``delf_weights`` (Keras ``save_weights`` layout).

  The reference's export scripts and ``load_weights`` read it. Returns the prefix.
  """
  import tensorflow as tf

  os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
  # The model object is the checkpoint root, as with Keras save_weights.
  return tf.train.Checkpoint(**vars_of(_mirror(model, include_heads))).write(prefix)


def write_reference_training_checkpoint(model, directory: str, step: int = 0) -> str:
  """Writes ``model`` as a reference ``delf_tf2-ckpt/ckpt-<step>`` with its ``checkpoint`` file.

  The reference's ``train.py`` resumes from it when ``directory`` is its
  ``<logdir>/delf_tf2-ckpt`` (the optimizer step is restored; its momentum starts
  at zero). Returns the checkpoint prefix.
  """
  import tensorflow as tf

  optimizer = tf.Module()
  optimizer._iterations = tf.Variable(int(step), dtype=tf.int64, trainable=False)
  checkpoint = tf.train.Checkpoint(model=_mirror(model, True), optimizer=optimizer)
  manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=None)
  return manager.save(checkpoint_number=int(step))


def vars_of(module) -> dict[str, object]:
  """The public trackable attributes of a ``tf.Module`` built by ``_mirror``."""
  return {k: v for k, v in vars(module).items() if not k.startswith("_")}
