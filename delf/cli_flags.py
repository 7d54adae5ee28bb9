"""Flag helpers shared by the command-line scripts.

Nothing here defines a flag at import time (KB-26): scripts call these
functions themselves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from absl import flags


class IntegralNumberParser(flags.ArgumentParser):
  """Parses a positive integer written as ``128`` or ``128.0`` (KB-18).

  The reference declared integer sizes as float flags, so existing command
  lines pass ``--autoencoder_dimensions=128.0``; those keep working, while
  ``128.5`` or ``0`` are rejected with a one-line error.
  """

  syntactic_help = "a positive integer (an integral float such as 128.0 is accepted)"

  def __init__(self, lower_bound: int = 1):
    self.lower_bound = lower_bound

  def parse(self, argument):
    if isinstance(argument, bool):
      raise ValueError(f"expected an integer, got {argument!r}")
    if isinstance(argument, int):
      value = argument
    else:
      try:
        number = float(argument)
      except (TypeError, ValueError):
        raise ValueError(f"expected an integer, got {argument!r}") from None
      if not number.is_integer():
        raise ValueError(f"expected an integral value, got {argument!r}")
      value = int(number)
    if value < self.lower_bound:
      raise ValueError(f"must be >= {self.lower_bound}, got {argument!r}")
    return value

  def flag_type(self):
    return "int"


def DEFINE_integral(
  name: str, default: int, help: str, lower_bound: int = 1, **kwargs
) -> flags.FlagHolder:
  """Defines an integer flag that also accepts integral floats like ``128.0``."""
  # Register the flag under the calling script so --help lists it there.
  module_name = sys._getframe(1).f_globals.get("__name__")
  if module_name == "__main__":
    module_name = sys.argv[0]  # What absl itself uses for the main module.
  kwargs.setdefault("module_name", module_name)
  return flags.DEFINE(
    IntegralNumberParser(lower_bound),
    name,
    default,
    help,
    serializer=flags.ArgumentSerializer(),
    **kwargs,
  )


def _caller_module_name() -> str | None:
  module_name = sys._getframe(2).f_globals.get("__name__")
  return sys.argv[0] if module_name == "__main__" else module_name


def DEFINE_export_speed_flags(batch_signature: bool = True) -> None:
  """``--precision`` (and ``--batch_signature``) of the export scripts (issue 12)."""
  from delf.export.precision import PRECISIONS

  module_name = _caller_module_name()
  flags.DEFINE_enum(
    "precision",
    "float32",
    list(PRECISIONS),
    "Compute type of the exported network. float32 (default) is the trained model as is; "
    "bfloat16 (CPUs with AVX512_BF16/AMX, GPUs) and float16 (GPUs) fold the batch norms and "
    "run the convolutions in that type, outputs stay float32 (parity: see the benchmarks).",
    module_name=module_name,
  )
  if batch_signature:
    flags.DEFINE_boolean(
      "batch_signature",
      False,
      "Also export the 'serving_batch' signature, which extract_features.py --batch_size "
      "uses to run several same-size images per model call (doubles the export time).",
      module_name=module_name,
    )


_HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "?")


def _help_requested(argv: Sequence[str]) -> bool:
  for arg in argv[1:]:
    if arg == "--":
      return False
    name = arg.lstrip("-").split("=", 1)[0]
    if arg.startswith("-") and name in _HELP_FLAGS:
      return True
  return False


def run(main: Callable[[list[str]], int | None], tensorflow: bool = False) -> None:
  """``absl.app.run(main)``, except that ``--help`` exits with status 0, not 1.

  absl prints the usage for ``--help`` and exits with 1, which breaks shell
  pipelines and ``--help`` checks; asking for help is not a failure. TensorFlow's
  start-up lines are hidden unless ``--verbosity`` asks for them (``tf_startup``);
  with ``tensorflow=True`` TensorFlow is imported (quietly) before ``main`` runs.
  """
  from absl import app

  from delf import tf_startup

  help_requested = _help_requested(sys.argv)

  def main_with_tf_startup(argv):
    tf_startup.configure_from_flags()
    if tensorflow:
      tf_startup.import_tensorflow()
    return main(argv)

  try:
    app.run(main_with_tf_startup)
  except SystemExit as e:
    if help_requested and e.code == 1:
      name = os.path.splitext(os.path.basename(sys.argv[0]))[0] or "<name>"
      print(
        f"\nRun as `python scripts/{name}.py` from any folder, or `python -m scripts.{name}` "
        "from the repository root (the folder that holds scripts/)."
      )
      raise SystemExit(0) from None
    raise
