"""Where model weights can come from, what a file holds, and loading it into our model.

Two origins are recognised from the file itself (no flags needed):

* ours: ``delf_weights``, ``delf_tf2-ckpt/ckpt-N`` or an export of this project;
* the reference's: its ``delf_weights`` (Keras ``save_weights``), its
  ``delf_tf2-ckpt/ckpt-N`` (model + SGD momentum) and its exported SavedModels
  (the layout of the published DELF/DELG models), mapped by
  ``delf.model.reference_weights``;
* anything else is refused with a line saying what was found.

``inspect_weights(path)`` reads only the checkpoint index and object graph and
describes the model in it ("a reference-format checkpoint (model weights) of a
DELG model with autoencoder (128-d), 81313 classes"); ``load_weights`` fills a
model from it, classifier heads only when their class count matches.
"""

from __future__ import annotations

import dataclasses
import string

from delf.model import reference_weights
from delf.model.checkpoint_contents import (
  CheckpointContents,
  NotACheckpointError,
  resolve_checkpoint_prefix,
)

OURS, REFERENCE = "ours", "reference"

# Our own attribute paths of the variables that identify a model (the reference's are
# ``reference_weights.reference_path`` of the same layer paths). Keras 3 stores a
# Conv/Dense kernel as ``_kernel``.
_OUR_PATHS = {
  "backbone/conv1/kernel": "backbone/conv1/_kernel",
  "backbone/res2a/res2a_branch1/kernel": "backbone/l2a/conv1/_kernel",
  "backbone/embedding_layer/kernel": "backbone/embedding/_kernel",
  "attention/attn_conv1/kernel": "attention/conv1/_kernel",
  "autoencoder/autoenc_conv1/kernel": "autoencoder/conv1/_kernel",
  "desc_fc/kernel": "desc_classification/_kernel",
  "desc_fc/cosine_weights": "desc_classification/cosine_weights",
  "att_fc/kernel": "attn_classification/_kernel",
}
_STEM = "backbone/conv1/kernel"
_SHORTCUT = "backbone/res2a/res2a_branch1/kernel"


class WeightSourceError(ValueError):
  """The weights cannot be used as asked; the message says what the file holds."""


@dataclasses.dataclass
class WeightSource:
  """A checkpoint or SavedModel holding a DELF/DELG model, and what model that is."""

  path: str
  prefix: str
  container: str  # "checkpoint" or "saved_model"
  origin: str  # OURS or REFERENCE
  model_prefix: str  # object path of the model inside the file ("", "model/", "_model/")
  contents: CheckpointContents
  model_class: str
  block_counts: tuple[int, ...]
  width_factor: float
  local_channels: int
  has_attention: bool
  use_autoencoder: bool
  reduced_dimension: int | None
  embedding_dim: int | None
  num_classes: int | None
  step: int | None

  def stored_path(self, layer_path: str) -> str:
    """Where the variable with this layer path is stored in this file."""
    if self.origin == REFERENCE:
      return self.model_prefix + reference_weights.reference_path(layer_path)
    return self.model_prefix + _OUR_PATHS[layer_path]

  @property
  def kind(self) -> str:
    if self.container == "saved_model":
      return "SavedModel export"
    if self.step is not None:
      return f"training checkpoint (step {self.step}, with optimizer state)"
    return "checkpoint (model weights)"

  def describe_model(self) -> str:
    return describe_architecture(
      self.model_class,
      self.use_autoencoder,
      self.reduced_dimension,
      self.num_classes,
      has_attention=self.has_attention,
      block_counts=self.block_counts,
      width_factor=self.width_factor,
    )

  def describe(self) -> str:
    origin = "a reference-format" if self.origin == REFERENCE else "this project's"
    return f"{origin} {self.kind} of a {self.describe_model()}"

  def model_config(self) -> dict:
    """What training's ``model_config.json`` would say about this model (as far as known)."""
    config = {
      "block_counts": list(self.block_counts),
      "width_factor": self.width_factor,
      "use_dim_reduction": self.use_autoencoder,
      "reduced_dimension": self.reduced_dimension or 128,
      "dim_expand_channels": self.local_channels,
      "num_classes": self.num_classes,
    }
    if self.model_class == "Delg":
      config["embedding_layer_dim"] = self.embedding_dim
    return {"model_class": self.model_class, "config": config, "format_version": 1}


def describe_architecture(
  model_class: str,
  use_autoencoder: bool,
  reduced_dimension: int | None,
  num_classes: int | None,
  has_attention: bool = True,
  block_counts=(3, 4, 6, 3),
  width_factor: float = 1.0,
) -> str:
  """e.g. ``DELG model with autoencoder (128-d), 81313 classes``."""
  name = "DELG" if model_class == "Delg" else "DELF"
  if tuple(block_counts) != (3, 4, 6, 3) or width_factor != 1.0:
    name += f" (backbone blocks {','.join(map(str, block_counts))}, width x{width_factor:g})"
  parts = [f"{name} model"]
  if not has_attention:
    parts.append("without attention (global features only)")
  elif use_autoencoder:
    parts.append(f"with autoencoder ({reduced_dimension}-d)")
  else:
    parts.append("without autoencoder")
  text = " ".join(parts)
  if num_classes:
    return f"{text}, {num_classes} classes"
  return f"{text}, no classifier heads"


def describe_model(model) -> str:
  """The same description for a model we built (e.g. from the flags)."""
  return describe_architecture(
    type(model).model_class_name,
    model.use_dim_reduction,
    model.reduced_dimension,
    model.num_classes,
    block_counts=model.block_counts,
    width_factor=model.width_factor,
  )


def _detect(contents: CheckpointContents) -> tuple[str, str] | None:
  """``(origin, model prefix)`` from where the stem conv and the first shortcut are stored."""
  for origin, stem, shortcut in (
    (
      REFERENCE,
      reference_weights.reference_path(_STEM),
      reference_weights.reference_path(_SHORTCUT),
    ),
    (OURS, _OUR_PATHS[_STEM], _OUR_PATHS[_SHORTCUT]),
  ):
    prefix = contents.find_prefix(stem)
    if prefix is not None and prefix + shortcut in contents:
      return origin, prefix
  return None


def inspect_weights(path: str) -> WeightSource:
  """Reads what ``path`` holds (checkpoint prefix, logdir or SavedModel directory).

  Raises:
    WeightSourceError: not a checkpoint, or not a DELF/DELG model of either
      format; the message says what was found.
  """
  try:
    prefix, container = resolve_checkpoint_prefix(path)
    contents = CheckpointContents(prefix)
  except NotACheckpointError as e:
    raise WeightSourceError(str(e)) from None
  detected = _detect(contents)
  if detected is None:
    what = "SavedModel" if container == "saved_model" else "TF checkpoint"
    raise WeightSourceError(
      f"{path}: a {what} with {contents.describe_keys()}; neither this project's nor the "
      "reference's DELF/DELG layout (no backbone/conv1 with a res2a shortcut)"
    )
  origin, model_prefix = detected
  source = WeightSource(
    path=path,
    prefix=prefix,
    container=container,
    origin=origin,
    model_prefix=model_prefix,
    contents=contents,
    model_class="Delf",
    block_counts=(),
    width_factor=1.0,
    local_channels=0,
    has_attention=False,
    use_autoencoder=False,
    reduced_dimension=None,
    embedding_dim=None,
    num_classes=None,
    step=None,
  )
  _fill_architecture(source)
  return source


def _fill_architecture(source: WeightSource) -> None:
  contents = source.contents

  def shape(layer_path: str):
    return contents.shape(source.stored_path(layer_path))

  def block_stored(stage: int, letter: str) -> str:
    if source.origin == REFERENCE:
      return source.stored_path(f"backbone/res{stage}{letter}/res{stage}{letter}_branch2a/kernel")
    return source.model_prefix + f"backbone/l{stage}{letter}/conv2a/_kernel"

  counts = []
  for stage in (2, 3, 4, 5):
    count = 0
    while (
      count < len(string.ascii_lowercase)
      and block_stored(stage, string.ascii_lowercase[count]) in contents
    ):
      count += 1
    counts.append(count)
  source.block_counts = tuple(counts)
  source.width_factor = shape(_STEM)[-1] / 64
  attention = shape("attention/attn_conv1/kernel")
  source.has_attention = attention is not None
  # block3 channels: the attention's input, else 1024 scaled like the backbone does.
  source.local_channels = (
    int(attention[-2]) if attention else max(1, round(1024 * source.width_factor))
  )
  autoencoder = shape("autoencoder/autoenc_conv1/kernel")
  source.use_autoencoder = autoencoder is not None
  if autoencoder is not None:
    source.reduced_dimension = int(autoencoder[-1])
  embedding = shape("backbone/embedding_layer/kernel")
  source.model_class = "Delg" if embedding is not None else "Delf"
  source.embedding_dim = int(embedding[-1]) if embedding is not None else None
  head = shape("desc_fc/cosine_weights") or shape("desc_fc/kernel") or shape("att_fc/kernel")
  source.num_classes = int(head[-1]) if head is not None else None
  if "optimizer/_iterations" in contents and source.container == "checkpoint":
    source.step = int(contents.read("optimizer/_iterations"))


# ---------------------------------------------------------------------------- loading


@dataclasses.dataclass
class LoadReport:
  """What ``load_weights`` did: variables assigned and what happened to the heads."""

  num_variables: int
  heads_loaded: bool
  heads_note: str | None = None


def architecture_differences(model, source: WeightSource, need_attention: bool = True) -> list[str]:
  """How the model in ``source`` differs from ``model`` (classifier heads aside)."""
  ours = type(model).model_class_name
  differences = []
  if source.model_class != ours:
    differences.append(f"{source.model_class.upper()} instead of {ours.upper()}")
  if tuple(source.block_counts) != tuple(model.block_counts) or not _close(
    source.width_factor, model.width_factor
  ):
    differences.append(
      f"backbone blocks {list(source.block_counts)} width {source.width_factor:g} instead of "
      f"{list(model.block_counts)} width {model.width_factor:g}"
    )
  if need_attention:
    if not source.has_attention:
      differences.append("no attention layers")
    elif model.use_dim_reduction and not source.use_autoencoder:
      differences.append("no autoencoder")
    elif source.use_autoencoder and not model.use_dim_reduction:
      differences.append(f"a {source.reduced_dimension}-d autoencoder the model does not have")
    elif model.use_dim_reduction and source.reduced_dimension != model.reduced_dimension:
      differences.append(
        f"a {source.reduced_dimension}-d autoencoder instead of {model.reduced_dimension}-d"
      )
  if ours == source.model_class == "Delg" and source.embedding_dim != model.embedding_layer_dim:
    differences.append(
      f"a {source.embedding_dim}-d embedding instead of {model.embedding_layer_dim}-d"
    )
  return differences


def _close(a: float, b: float) -> bool:
  return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def heads_compatible(model, source: WeightSource) -> tuple[bool, str | None]:
  """Whether the source's classifier heads fit ``model``; otherwise why not (one line)."""
  if not model.num_classes:
    return False, None
  if source.num_classes is None:
    return False, (
      f"{source.path} has no classifier heads: desc_fc/att_fc initialised randomly "
      f"({model.num_classes} classes)"
    )
  if source.num_classes != model.num_classes:
    return False, (
      f"{source.path} has {source.num_classes}-class heads, this model "
      f"{model.num_classes} classes: desc_fc/att_fc re-initialised randomly"
    )
  return True, None


def load_weights(model, source: WeightSource, heads: bool = True) -> LoadReport:
  """Loads every non-head variable of ``model`` from ``source``; the heads if they fit.

  Raises:
    WeightSourceError: the source holds another architecture (says which), or
      a variable is missing or has another shape.
  """
  differences = architecture_differences(model, source)
  if differences:
    raise WeightSourceError(
      f"{source.path} holds {source.describe()}: {'; '.join(differences)} "
      f"(the model here is a {describe_model(model)})"
    )
  load_heads, note = heads_compatible(model, source) if heads else (False, None)
  variables = reference_weights.model_variables(model, include_heads=load_heads)
  if source.origin == REFERENCE:
    pairs, mismatch = reference_weights.match_variables(
      variables, source.contents, source.model_prefix
    )
    if mismatch:
      raise WeightSourceError(
        f"{source.path} ({source.describe()}) does not fit the model: {mismatch.summary()}"
      )
    reference_weights.assign_from(variables, source.contents, pairs)
  else:
    _restore_ours(model, source, load_heads)
  return LoadReport(len(variables), load_heads, note)


def _restore_ours(model, source: WeightSource, load_heads: bool) -> None:
  """Object-based restore of our own layout, through a view without unwanted parts."""
  import tensorflow as tf

  view = tf.Module()
  for name in ("backbone", "attention", "autoencoder"):
    if hasattr(model, name):
      setattr(view, name, getattr(model, name))
  if load_heads:
    view.desc_classification = model.desc_classification
    view.attn_classification = model.attn_classification
  root = view
  for name in reversed([n for n in source.model_prefix.split("/") if n]):
    parent = tf.Module()
    setattr(parent, name, root)
    root = parent
  checkpoint = tf.train.Checkpoint(**reference_weights.vars_of(root))
  try:
    status = checkpoint.read(source.prefix)
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise WeightSourceError(
      f"{source.path} ({source.describe()}) does not fit the model: {str(e).splitlines()[0][:300]}"
    ) from None
  status.expect_partial()
