r"""Parity of reduced-precision exports with float32, on a trained model and real photos.

Usage:
  bash demo.sh /tmp/demo                          # a trained DELG model + the demo benchmark
  .venv/bin/python -m bench.precision_parity --demo_dir=/tmp/demo [--precision=bfloat16]

From the demo's DELG checkpoint (<demo_dir>/delg_training/delf_weights) it exports the
local-and-global model in float32 and in --precision, then compares, with the demo's
DELG config (7 scales, 1000 features, max_image_size 1024):
* local features on the real pairs of ../shared/data/real: inliers of every same-scene
  pair and of one image of each group against one of the next group (negatives), with
  `delf.matching.match` (seed 0); the counts must stay within +-10 % and the decision
  "inliers >= --inlier_threshold" must not change;
* DELG global descriptors of every real photo: cosine with float32 (target >= 0.999);
* the demo benchmark's mAP (medium / hard, with and without re-ranking): within 1 point.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REAL = REPO.parent / "shared" / "data" / "real"


def export(demo_dir: pathlib.Path, precision: str) -> pathlib.Path:
  from delf.export import exporter

  path = demo_dir / "exports" / f"delg_{precision}"
  if not path.exists():
    exporter.export(
      exporter.LocalAndGlobalExportConfig(
        export_path=str(path),
        ckpt_path=str(demo_dir / "delg_training" / "delf_weights"),
        precision=precision,
      )
    )
  return path


def make_extractor(model_path: pathlib.Path):
  from google.protobuf import text_format

  from delf.extraction.extractor import MakeExtractor
  from delf.protos import delf_config_pb2

  config = text_format.Parse(
    (REPO / "configs" / "delg_demo_config.pbtxt").read_text(), delf_config_pb2.DelfConfig()
  )
  config.model_path = str(model_path)
  return MakeExtractor(config)


def real_pairs() -> tuple[list[str], list[tuple[str, str, bool]]]:
  with open(REAL / "manifest.csv") as f:
    rows = list(csv.DictReader(f))
  groups: dict[str, list[str]] = {}
  for row in rows:
    groups.setdefault(row["group"], []).append(row["path"])
  paths = [row["path"] for row in rows]
  positives = [
    (a, b, True)
    for members in groups.values()
    if len(members) > 1
    for a, b in itertools.combinations(members, 2)
  ]
  names = sorted(groups)
  negatives = [(groups[a][0], groups[b][0], False) for a, b in zip(names, names[1:] + names[:1])]
  return paths, positives + negatives


def extract_all(extractor, paths: list[str]) -> dict:
  from delf.extraction.image_io import RgbLoader

  return {path: extractor(np.array(RgbLoader(str(REAL / path)))) for path in paths}


def inliers(features_1: dict, features_2: dict, seed: int = 0) -> int:
  from delf.matching import LocalFeatures, match

  local_1, local_2 = features_1["local_features"], features_2["local_features"]
  result = match(
    LocalFeatures(local_1["locations"], local_1["descriptors"]),
    LocalFeatures(local_2["locations"], local_2["descriptors"]),
    seed=seed,
  )
  return int(result.num_inliers)


def metrics(demo_dir: pathlib.Path, model: pathlib.Path, tag: str) -> dict[str, float]:
  """Runs the demo's DELG extraction + retrieval with ``model``; returns the mAPs."""
  config = demo_dir / f"delg_config_{tag}.pbtxt"
  text = (REPO / "configs" / "delg_demo_config.pbtxt").read_text()
  config.write_text(
    text.replace('model_path: "demo_output/exports/delg"', f'model_path: "{model}"')
  )
  benchmark = demo_dir / "benchmark"
  features = demo_dir / f"features_{tag}"
  python = sys.executable
  for image_set in ("query", "index"):
    subprocess.run(
      [
        python, "scripts/extract_delg_features.py", f"--delf_config_path={config}",
        f"--dataset_file_path={benchmark}/gnd_demo.mat", f"--images_dir={benchmark}/images",
        f"--image_set={image_set}", f"--output_features_dir={features}/{image_set}",
      ],
      check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
  values = {}
  for gv in ("nouse_geometric_verification", "use_geometric_verification"):
    output = demo_dir / f"retrieval_{tag}_{gv}"
    subprocess.run(
      [
        python, "scripts/perform_retrieval.py", f"--dataset_file_path={benchmark}/gnd_demo.mat",
        f"--query_features_dir={features}/query", f"--index_features_dir={features}/index",
        f"--{gv}", f"--output_dir={output}",
      ],
      check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    key = None
    for line in (output / "metrics.txt").read_text().splitlines():
      if line and not line.startswith(" "):
        key = line.strip()
      elif line.strip().startswith("mAP="):
        values[f"{key} ({gv.split('_')[0]})"] = line.strip()[4:]
  return values


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--demo_dir", required=True)
  parser.add_argument("--precision", default="bfloat16", choices=["bfloat16", "float16"])
  parser.add_argument("--inlier_threshold", type=int, default=20)
  parser.add_argument("--skip_benchmark", action="store_true")
  args = parser.parse_args()
  demo_dir = pathlib.Path(args.demo_dir).resolve()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  models = {p: export(demo_dir, p) for p in ("float32", args.precision)}
  paths, pairs = real_pairs()
  features = {p: extract_all(make_extractor(m), paths) for p, m in models.items()}

  print(f"\nLocal features, real pairs, {args.precision} vs float32 (decision: inliers >= "
        f"{args.inlier_threshold})")  # fmt: skip
  print(
    "| pair | same scene | inliers float32 | inliers reduced | change | same decision | "
    "float32, RANSAC seed 1 (noise) |"
  )
  print("| --- | --- | --- | --- | --- | --- | --- |")
  worst, flips = 0.0, 0
  for a, b, same in pairs:
    counts = [inliers(features[p][a], features[p][b]) for p in models]
    reseeded = inliers(features["float32"][a], features["float32"][b], seed=1)
    change = (counts[1] - counts[0]) / max(counts[0], 1)
    decided = [c >= args.inlier_threshold for c in counts]
    flips += decided[0] != decided[1]
    if counts[0] >= args.inlier_threshold:
      worst = max(worst, abs(change))
    print(
      f"| {a} / {b} | {'yes' if same else 'no'} | {counts[0]} | {counts[1]} | {change:+.1%} | "
      f"{'yes' if decided[0] == decided[1] else 'NO'} | {reseeded} "
      f"({(reseeded - counts[0]) / max(counts[0], 1):+.1%}) |"
    )
  print(f"largest change among matching pairs: {worst:.1%}; decisions changed: {flips}")

  cosines = []
  for path in paths:
    a = features["float32"][path]["global_descriptor"]
    b = features[args.precision][path]["global_descriptor"]
    cosines.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
  print(f"\nGlobal descriptors of {len(paths)} real photos: cosine with float32 min "
        f"{min(cosines):.6f}, median {np.median(cosines):.6f}")  # fmt: skip

  if not args.skip_benchmark:
    print("\nDemo benchmark mAP (float32 / reduced):")
    base = metrics(demo_dir, models["float32"], "float32")
    reduced = metrics(demo_dir, models[args.precision], args.precision)
    for key in base:
      print(f"  {key}: {base[key]}  /  {reduced[key]}")


if __name__ == "__main__":
  main()
