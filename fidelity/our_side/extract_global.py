"""Global descriptors with our extractor: ``<output_dir>/<basename>.global`` per image.

  python -m fidelity.our_side.extract_global CONFIG_PBTXT LIST_FILE OUTPUT_DIR

The counterpart of the reference-side helper ``extract_global.py`` that
``../shared/reference/setup.sh`` installs: the same config, the same images, the
descriptor written with ``datum_io``.
"""

from __future__ import annotations

import os
import sys

import numpy as np


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print(__doc__, file=sys.stderr)
    return 2
  config_path, list_path, output_dir = argv
  from delf import datum_io
  from delf.extraction.config_io import read_delf_config
  from delf.extraction.extractor import MakeExtractor
  from delf.extraction.image_io import RgbLoader

  config = read_delf_config(config_path)
  extractor = MakeExtractor(config)
  os.makedirs(output_dir, exist_ok=True)
  with open(list_path) as f:
    paths = [line.strip() for line in f if line.strip()]
  for path in paths:
    features = extractor(np.array(RgbLoader(path)))
    name = os.path.splitext(os.path.basename(path))[0] + ".global"
    datum_io.WriteToFile(features["global_descriptor"], os.path.join(output_dir, name))
  print(f"wrote {len(paths)} global descriptors to {output_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
