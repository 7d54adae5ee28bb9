"""Runs one of the reference's scripts unchanged, optionally with two hooks.

  run_script.py [--kb17] [--ransac_seed=N --ransac_inliers=OUT.npy] SCRIPT [ARGS...]

--kb17: the attention wiring our spec chose (see kb17.py).
--ransac_seed: scikit-image's ``ransac`` gets ``rng=N`` (the reference passes none, so
  its RANSAC is unseeded, KB-49); --ransac_inliers saves the inlier mask it returns.
"""

import functools
import runpy
import sys

import numpy as np


def main(argv):
  kb17, seed, inliers_path = False, None, None
  while argv and argv[0].startswith("--"):
    option = argv.pop(0)
    if option == "--kb17":
      kb17 = True
    elif option.startswith("--ransac_seed="):
      seed = int(option.split("=", 1)[1])
    elif option.startswith("--ransac_inliers="):
      inliers_path = option.split("=", 1)[1]
    else:
      raise SystemExit(f"unknown option {option}")
  script, args = argv[0], argv[1:]
  if kb17:
    import kb17 as adapter

    adapter.install()
  if seed is not None or inliers_path:
    from skimage import measure

    original = measure.ransac

    @functools.wraps(original)
    def ransac(*a, **kw):
      if seed is not None:
        kw.setdefault("rng", seed)
      model, inliers = original(*a, **kw)
      if inliers_path:
        np.save(inliers_path, np.asarray(inliers, bool))
      return model, inliers

    measure.ransac = ransac
  sys.argv = [script, *args]
  runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
  main(sys.argv[1:])
