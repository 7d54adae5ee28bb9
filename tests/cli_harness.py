"""Runs the absl scripts under ``scripts/`` in-process, as a user would run them.

Several scripts define flags with the same name (``seed``, ``output_dir``,
``delg_global_features`` with different defaults...). Importing them all into
one test process would raise ``DuplicateFlagError``, so before each run the
flags of previously imported scripts are unregistered and the script module
is (re)loaded, which defines its flags afresh with their real defaults.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from absl import flags

FLAGS = flags.FLAGS


def _unregister_script_flags() -> None:
  for module_name, module_flags in list(FLAGS.flags_by_module_dict().items()):
    if module_name.startswith("scripts.") or module_name == "__main__":
      for flag in list(module_flags):
        if flag.name in FLAGS:
          delattr(FLAGS, flag.name)


def load_script(name: str):
  """Imports ``scripts.<name>`` with freshly registered flags and returns it."""
  _unregister_script_flags()
  module_name = f"scripts.{name}"
  if module_name in sys.modules:
    return importlib.reload(sys.modules[module_name])
  return importlib.import_module(module_name)


def run_script(name: str, args: Sequence[str] = (), **flag_values):
  """Runs ``scripts/<name>.py`` with ``args`` (``--x=1`` strings) and/or ``flag=value``.

  Returns whatever the script's ``main`` returns. Flags are parsed exactly as
  on the command line; ``flag_values`` are turned into ``--name=value``.
  """
  module = load_script(name)
  argv = [f"{name}.py", *args]
  for key, value in flag_values.items():
    if isinstance(value, bool):
      argv.append(f"--{key}" if value else f"--no{key}")
    elif isinstance(value, (list, tuple)):
      argv.append(f"--{key}={','.join(str(v) for v in value)}")
    else:
      argv.append(f"--{key}={value}")
  FLAGS.unparse_flags()
  remaining = FLAGS(argv)
  try:
    return module.main(remaining)
  finally:
    FLAGS.unparse_flags()
