"""Regenerates the committed ``*_pb2.py`` modules from ``protos/*.proto``.

The generated modules are committed so that installing the package needs no
protobuf compiler. ``grpcio-tools`` (a pip-installable ``protoc``) is only
needed to regenerate them: ``python -m delf.protos.generate``. A test
regenerates them into a temporary folder and checks they are identical.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_SOURCE_DIR = REPO_ROOT / "protos"
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
PROTO_NAMES = ("datum", "feature", "box", "delf_config", "aggregation_config")


def generate(
  output_dir: pathlib.Path, source_dir: pathlib.Path = PROTO_SOURCE_DIR
) -> list[pathlib.Path]:
  """Compiles every proto into ``output_dir`` and returns the written paths.

  The sources are staged under ``delf/protos/`` so that the descriptors carry
  the reference's file names (``delf/protos/datum.proto``) and imports.
  """
  output_dir = pathlib.Path(output_dir)
  with tempfile.TemporaryDirectory() as staging:
    staging = pathlib.Path(staging)
    proto_dir = staging / "delf" / "protos"
    proto_dir.mkdir(parents=True)
    for name in PROTO_NAMES:
      shutil.copy(source_dir / f"{name}.proto", proto_dir / f"{name}.proto")
    out = staging / "out"
    out.mkdir()
    # A separate process: grpc_tools' compiler can crash a process that has already
    # loaded TensorFlow's own protobuf library.
    args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{staging}", f"--python_out={out}"]
    args += [f"delf/protos/{name}.proto" for name in PROTO_NAMES]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise RuntimeError(f"protoc failed on {source_dir}: {result.stderr.strip()}")
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PROTO_NAMES:
      target = output_dir / f"{name}_pb2.py"
      shutil.copy(out / "delf" / "protos" / f"{name}_pb2.py", target)
      written.append(target)
  return written


if __name__ == "__main__":
  for path in generate(PACKAGE_DIR):
    print(f"wrote {path}")
  sys.exit(0)
