"""What a TensorFlow checkpoint or SavedModel holds, read without building a model.

A TF object-based checkpoint stores its variables under keys such as
``model/backbone/conv1/kernel/.ATTRIBUTES/VARIABLE_VALUE``, plus an object graph
(``_CHECKPOINTABLE_OBJECT_GRAPH``) that says how the saved objects hang
together. A variable reachable along several paths is stored once, under one
key (in a Keras 3 training checkpoint the trainable weights are keyed by the
optimizer's list, ``optimizer/_trainable_variables/7/...``), so the keys alone
do not show the model. ``CheckpointContents`` walks the object graph instead and
lists every variable under every path it can be reached by, with its key,
shape and the ``full_name`` TensorFlow recorded (the variable's name in the
program that wrote it, e.g. ``res2a_branch2a/kernel``).

A SavedModel keeps its variables in such a checkpoint at
``<dir>/variables/variables``.
"""

from __future__ import annotations

import collections
import dataclasses
import os

_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


class NotACheckpointError(ValueError):
  """The path holds no TF checkpoint or SavedModel; the message says what it holds."""


@dataclasses.dataclass(frozen=True)
class StoredVariable:
  """One saved variable: its checkpoint key, shape and recorded ``full_name``."""

  key: str
  shape: tuple[int, ...]
  full_name: str


def saved_model_variables_prefix(directory: str) -> str:
  return os.path.join(directory, "variables", "variables")


def is_saved_model(path: str) -> bool:
  return os.path.isdir(path) and (
    os.path.exists(os.path.join(path, "saved_model.pb"))
    or os.path.exists(os.path.join(path, "saved_model.pbtxt"))
  )


def _what_is_there(path: str) -> str:
  """A short description of a path that is not a checkpoint (for error messages)."""
  if not os.path.lexists(path):
    if os.path.lexists(path + ".data-00000-of-00001"):
      return f"{path}: checkpoint data without its .index file (incomplete copy?)"
    return f"{path}: no such file, checkpoint prefix (<prefix>.index) or SavedModel directory"
  if os.path.isdir(path):
    entries = sorted(os.listdir(path))[:6]
    shown = ", ".join(entries) if entries else "empty"
    return f"{path}: a directory with neither saved_model.pb nor a checkpoint (contains: {shown})"
  with open(path, "rb") as f:
    head = f.read(8)
  if head.startswith(b"\x89HDF"):
    kind = "an HDF5 file (Keras .h5 weights; ImageNet weights go to --imagenet_checkpoint)"
  elif path.endswith(".index"):
    kind = "a .index file: pass the prefix without the .index suffix"
  elif ".data-" in os.path.basename(path):
    kind = "a checkpoint data shard: pass the prefix (the path without .data-*)"
  else:
    kind = f"a file of {os.path.getsize(path)} bytes that is not a TF checkpoint"
  return f"{path}: {kind}"


def resolve_checkpoint_prefix(path: str) -> tuple[str, str]:
  """Finds the checkpoint behind ``path``: returns ``(prefix, container)``.

  ``container`` is ``"saved_model"`` or ``"checkpoint"``. Accepted: a checkpoint
  prefix, a SavedModel directory, a training logdir (its ``delf_weights``) or a
  directory with a ``checkpoint`` index file (its latest checkpoint).

  Raises:
    NotACheckpointError: saying what is at ``path`` instead.
  """
  path = os.fspath(path).rstrip("/") or "/"
  if os.path.exists(path + ".index"):
    return path, "checkpoint"
  if is_saved_model(path):
    prefix = saved_model_variables_prefix(path)
    if not os.path.exists(prefix + ".index"):
      raise NotACheckpointError(f"{path}: a SavedModel without variables/variables.index")
    return prefix, "saved_model"
  if os.path.isdir(path):
    weights = os.path.join(path, "delf_weights")
    if os.path.exists(weights + ".index"):
      return weights, "checkpoint"
    if os.path.exists(os.path.join(path, "checkpoint")):
      import tensorflow as tf

      latest = tf.train.latest_checkpoint(path)
      if latest:
        return latest, "checkpoint"
  raise NotACheckpointError(_what_is_there(path))


class CheckpointContents:
  """Every variable of a checkpoint, by object path, read lazily.

  Args:
    prefix: the checkpoint prefix (``<prefix>.index`` must exist).
  """

  def __init__(self, prefix: str):
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    self.prefix = prefix
    try:
      self._reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
      raise NotACheckpointError(
        f"{prefix}: cannot read the checkpoint ({str(e).splitlines()[0]})"
      ) from None
    shapes = self._reader.get_variable_to_shape_map()
    self.variables: dict[str, StoredVariable] = {}
    if _GRAPH_KEY not in shapes:
      # A name-based (TF1) checkpoint: the keys are the paths.
      for key, shape in shapes.items():
        self.variables[key] = StoredVariable(key, tuple(shape), key)
      return
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(self._reader.get_tensor(_GRAPH_KEY))
    self._walk(graph, shapes)

  def _walk(self, graph, shapes) -> None:
    """Breadth-first from the root: every variable node under every path to it."""
    queue = collections.deque([(0, "")])
    expanded = set()
    while queue:
      node_id, path = queue.popleft()
      node = graph.nodes[node_id]
      for attribute in node.attributes:
        if attribute.name == "VARIABLE_VALUE" and attribute.checkpoint_key in shapes:
          key = attribute.checkpoint_key
          self.variables[path] = StoredVariable(key, tuple(shapes[key]), attribute.full_name)
      if node_id in expanded:
        continue
      expanded.add(node_id)
      for child in node.children:
        queue.append((child.node_id, f"{path}/{child.local_name}" if path else child.local_name))

  def __contains__(self, path: str) -> bool:
    return path in self.variables

  def shape(self, path: str) -> tuple[int, ...] | None:
    stored = self.variables.get(path)
    return stored.shape if stored else None

  def read(self, path: str):
    """The value (NumPy array) of the variable at ``path``."""
    return self._reader.get_tensor(self.variables[path].key)

  def paths(self, prefix: str = "") -> list[str]:
    return sorted(p for p in self.variables if p.startswith(prefix))

  def find_prefix(self, suffix: str) -> str | None:
    """The shortest path prefix under which ``suffix`` is stored (``""`` at the root)."""
    found = [p[: -len(suffix)] for p in self.variables if p == suffix or p.endswith("/" + suffix)]
    return min(found, key=len) if found else None

  def describe_keys(self, limit: int = 5) -> str:
    keys = sorted(s.key.replace(_VALUE_SUFFIX, "") for s in self.variables.values())
    keys = [k for k in keys if k != _GRAPH_KEY]
    shown = ", ".join(keys[:limit])
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} variables: {shown}{more}"
