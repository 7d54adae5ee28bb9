"""Benchmark: DELF local extraction speed (performance.md §4).

Usage:
  .venv/bin/python bench/extract.py [--num_images 10] [--model_dir DIR] [--max_image_size -1]

Setting as the reference's: the DELF example config (7 scales 0.25 ... 2.0, at most 1000
features, no PCA, score threshold 0) on 640x480 photos, with a full ResNet-50 DELF local
export (block3_strides, no autoencoder: 1024-D descriptors) with random weights (speed does
not depend on the weights). Unless --model_dir names an export, one is built in a temporary
folder with delf.export.modules.LocalFeatureModule. Images are demo views rendered from
scikit-image's photos (delf.data.demo). As in performance.md, steady state = (N-image run -
1-image run) / (N - 1), each run a separate `scripts/extract_features.py` process. Reference:
3.95 s per image (0.25 images/s), 1.45 GB peak RSS.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCALES = [0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0]


def build_export(path: str) -> None:
  import tensorflow as tf

  from delf.export.modules import LocalFeatureModule
  from delf.model.delf_model import Delf

  tf.keras.utils.set_random_seed(0)
  model = Delf(block3_strides=True, use_dim_reduction=False, num_classes=None)
  module = LocalFeatureModule(model, block3_strides=True, iou=1.0)
  tf.saved_model.save(module, path, signatures={"serving_default": module.ExtractFeatures})


def write_images(directory: str, num_images: int) -> list[str]:
  from PIL import Image

  from delf.data import demo

  sources = demo.landmark_source_images()
  rng = np.random.default_rng(0)
  paths = []
  for i in range(num_images):
    view, _ = demo.render_landmark_view(sources[(i // 2) % len(sources)], rng, (480, 640))
    path = os.path.join(directory, f"image_{i:02d}.jpg")
    Image.fromarray(view).save(path, quality=90)
    paths.append(path)
  return paths


def run(config_path: str, paths: list[str], output_dir: str) -> tuple[float, float]:
  list_path = output_dir + ".txt"
  pathlib.Path(list_path).write_text("\n".join(paths) + "\n")
  start = time.perf_counter()
  subprocess.run(
    [
      sys.executable,
      str(REPO / "scripts" / "extract_features.py"),
      f"--config_path={config_path}",
      f"--list_images_path={list_path}",
      f"--output_dir={output_dir}",
    ],
    check=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    cwd=REPO,
  )
  wall = time.perf_counter() - start
  peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  return wall, peak_mb


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=10)
  parser.add_argument("--model_dir", default=None)
  parser.add_argument("--max_image_size", type=int, default=-1)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    model_dir = args.model_dir
    if model_dir is None:
      model_dir = os.path.join(tmp, "model")
      start = time.perf_counter()
      build_export(model_dir)
      print(f"built random-weight ResNet-50 DELF export in {time.perf_counter() - start:.1f} s")
    paths = write_images(tmp, args.num_images)
    config_path = os.path.join(tmp, "config.pbtxt")
    pathlib.Path(config_path).write_text(
      f'model_path: "{model_dir}"\n'
      + "".join(f"image_scales: {s}\n" for s in SCALES)
      + f"max_image_size: {args.max_image_size}\n"
      + "is_tf2_exported: true\n"
      + "delf_local_config { use_pca: false max_feature_num: 1000 score_threshold: 0.0 }\n"
    )
    one, _ = run(config_path, paths[:1], os.path.join(tmp, "out_1"))
    many, peak_mb = run(config_path, paths, os.path.join(tmp, "out_n"))
  per_image = (many - one) / (len(paths) - 1)
  print(f"1-image run {one:.2f} s, {len(paths)}-image run {many:.2f} s, peak RSS {peak_mb:.0f} MB")
  print(
    f"steady state: {per_image:.2f} s/image = {1 / per_image:.3f} images/s "
    f"(reference 3.95 s/image = 0.25 images/s; ratio {3.95 / per_image:.2f}x)"
  )


if __name__ == "__main__":
  main()
