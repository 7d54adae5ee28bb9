"""Reduced-precision inference models for the exports (``--precision``).

The float32 export runs the Keras model as trained (bit-compatible with earlier
exports). For ``bfloat16`` / ``float16`` the export runs `FoldedInferenceModel`
instead: every batch normalisation is folded into the convolution before it
(``W' = W * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) +
beta``, computed in float64), so the network is conv + bias + ReLU all the way and
each activation is written once, in the reduced type. Only the convolutions and
the elementwise work between them run in the reduced type; everything whose
precision matters to the outputs runs in float32: the pixel normalisation and
pyramid resize, the attention softplus, GeM pooling, the DELG embedding, and every
output (local descriptors and attention scores are cast back to float32 before
selection, so the selected cells and their order come from float32 scores of the
reduced-precision network). The model itself is in `delf.export.folded`.

bfloat16 is fast on CPUs with native bf16 instructions (AVX512_BF16 or AMX, e.g.
AMD Zen 4, Intel Cooper Lake / Sapphire Rapids) and on GPUs; elsewhere it is
emulated and slower than float32: `bf16_support` says which.
"""

from __future__ import annotations

import os

PRECISIONS = ("float32", "bfloat16", "float16")
"""Values of the export flag ``--precision``; float32 is the default and unchanged."""

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def validate_precision(precision: str) -> str:
  """Returns ``precision`` or raises ValueError naming the allowed values."""
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
  return precision


def cpu_bf16_flags(cpuinfo_path: str = "/proc/cpuinfo") -> list[str]:
  """The CPU's native bfloat16 instruction sets named in ``/proc/cpuinfo`` ([] if none/unknown)."""
  try:
    with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
      for line in f:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          return [name for name in _CPU_BF16_FLAGS if name in flags]
  except OSError:
    pass
  return []


def bf16_support(cpuinfo_path: str = "/proc/cpuinfo") -> tuple[bool, str]:
  """Whether bfloat16 inference is native here, and a one-line reason.

  A GPU counts as native (every GPU TensorFlow supports computes bf16 at least as fast
  as float32 convolutions); otherwise the CPU flags decide.
  """
  import tensorflow as tf

  if tf.config.list_physical_devices("GPU"):
    return True, "a GPU is visible"
  found = cpu_bf16_flags(cpuinfo_path)
  if found:
    return True, f"the CPU has native bfloat16 instructions ({', '.join(found)})"
  if not os.path.exists(cpuinfo_path):
    return False, f"cannot tell whether this CPU has native bfloat16 ({cpuinfo_path} is absent)"
  return False, (
    "this CPU has no native bfloat16 instructions (no AVX512_BF16 or AMX in /proc/cpuinfo): "
    "bfloat16 is emulated and slower than float32 here"
  )
