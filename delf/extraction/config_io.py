"""Reading text-format ``DelfConfig`` files (inference.md §1.4, §4.1).

The reference parses configs with protobuf's ``text_format.Merge``: a singular
field given twice keeps the last value. That is our default; ``strict=True``
uses ``text_format.Parse``, which rejects such repetitions (useful to catch
typos in hand-written configs).
"""

from __future__ import annotations

import os

from google.protobuf import text_format

from delf.protos import delf_config_pb2


def parse_delf_config(text: str, strict: bool = False, source: str = "<string>"):
  """Parses a text-format DelfConfig; errors name ``source`` and the offending line."""
  config = delf_config_pb2.DelfConfig()
  try:
    if strict:
      text_format.Parse(text, config)
    else:
      text_format.Merge(text, config)
  except text_format.ParseError as e:
    raise ValueError(f"{source}: invalid DelfConfig: {e}") from None
  return config


def read_delf_config(path: str | os.PathLike, strict: bool = False) -> delf_config_pb2.DelfConfig:
  """Reads a text-format DelfConfig file (merge semantics unless ``strict``).

  Raises:
    FileNotFoundError: the file does not exist (message names it).
    ValueError: the text is not a valid DelfConfig (message names file and line).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  return parse_delf_config(text, strict=strict, source=path)
