"""Our putative matches and RANSAC inlier mask for a .delf pair, saved as .npz.

python -m fidelity.our_side.match_inliers FEATURES_1 FEATURES_2 SEED OUTPUT.npz
"""

from __future__ import annotations

import sys

import numpy as np


def main(argv: list[str]) -> int:
  features_1, features_2, seed, output = argv
  from delf.matching import LocalFeatures, match

  result = match(
    LocalFeatures.from_file(features_1), LocalFeatures.from_file(features_2), seed=int(seed)
  )
  np.savez(output, pairs=result.pairs, inliers=result.inliers)
  print(f"{result.num_putative} putative matches, {result.num_inliers} inliers")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
