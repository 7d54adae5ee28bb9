"""DELF/DELG: deep local and global image features (TensorFlow 2, Keras 3).

Importing ``delf`` is cheap: it loads the protobuf modules and the file I/O
modules only, never TensorFlow. Like the reference, the generated protobuf
modules are also reachable flat, e.g. ``delf.datum_pb2`` and
``from delf import feature_pb2``.
"""

import sys as _sys

from delf.protos import (
  aggregation_config_pb2,
  box_pb2,
  datum_pb2,
  delf_config_pb2,
  feature_pb2,
)

for _module in (aggregation_config_pb2, box_pb2, datum_pb2, delf_config_pb2, feature_pb2):
  _sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[-1]}"] = _module

from delf import box_io, datum_io, feature_io  # noqa: E402

__version__ = "2.0"

__all__ = [
  "aggregation_config_pb2",
  "box_io",
  "box_pb2",
  "datum_io",
  "datum_pb2",
  "delf_config_pb2",
  "feature_io",
  "feature_pb2",
]
