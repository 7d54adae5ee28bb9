r"""The GPU benchmark suite: training, extraction and exact search throughput in one table.

Usage:
  bash bench/gpu_suite.sh              # on a GPU machine: the real ResNet-50, ~8 minutes
  bash bench/gpu_suite.sh --tiny       # anywhere: tiny models and sizes (the test suite runs this)

Rows:
* training images/s, DELF and DELG (+ autoencoder, 81,313 classes), at each --train_sizes,
  float32 / --mixed_precision=bf16 / --jit_compile, at the largest batch of --batch_sizes
  that fits (tried from the largest down; an out-of-memory error moves to the next one).
  Measured by `delf.training.loop.train` itself after its first report (tracing and XLA
  compilation excluded), on synthetic 320x240 JPEG TFRecords.
* extraction images/s of the DELF 7-scale local export at 640x480 (1000 features),
  float32 / float16 / bfloat16 exports, one image per call and --extract_batch per call.
* faiss exact inner-product search (flat index) of --search_queries queries against
  --search_size x --search_dim float32 vectors, on the GPU when faiss sees one. Without
  faiss the row says "faiss not installed".
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

REAL = {
  "train_sizes": "321,512",
  "batch_sizes": "256,128,64,32,16,8",
  "train_steps": 15,
  "num_classes": 81313,
  "extract_size": "480,640",
  "extract_scales": "0.25,0.3536,0.5,0.7071,1.0,1.4142,2.0",
  "extract_batch": 8,
  "extract_calls": 5,
  "search_size": 1_000_000,
  "search_dim": 2048,
  "search_queries": 1000,
}
TINY = {
  "train_sizes": "64",
  "batch_sizes": "2",
  "train_steps": 3,
  "num_classes": 10,
  "extract_size": "96,128",
  "extract_scales": "0.7071,1.0",
  "extract_batch": 2,
  "extract_calls": 1,
  "search_size": 2000,
  "search_dim": 64,
  "search_queries": 10,
}
TINY_MODEL = {"block_counts": (1, 1, 1, 1), "width_factor": 1 / 16}


@dataclasses.dataclass
class Row:
  section: str
  setting: str
  value: str
  note: str = ""


def _is_oom(error: BaseException) -> bool:
  import tensorflow as tf

  return (
    isinstance(error, tf.errors.ResourceExhaustedError) or "out of memory" in str(error).lower()
  )


def train_rows(args, work: str) -> list[Row]:
  from bench.train_throughput import write_data
  from delf.training.config import TrainingConfig
  from delf.training.loop import train

  data = os.path.join(work, "data")
  os.makedirs(data, exist_ok=True)
  write_data(data, num_classes=4, per_class=8)
  model_kwargs = {}
  if args.tiny:
    model_kwargs = {
      "block_counts": TINY_MODEL["block_counts"],
      "width_factor": TINY_MODEL["width_factor"],
      "local_feature_map_channels": 64,
      "autoencoder_dimensions": 16,
      "delg_embedding_layer_dim": 32,
    }
  modes = {"float32": {}, "mixed bf16": {"mixed_precision": "bf16"}, "XLA": {"jit_compile": True}}
  batches = [int(b) for b in args.batch_sizes.split(",")]
  rows = []
  for model in ("DELF", "DELG"):
    for size in [int(s) for s in args.train_sizes.split(",")]:
      for mode, extra in modes.items():
        result = None
        for batch in batches:
          config = TrainingConfig(
            logdir=os.path.join(work, f"log_{model}_{size}_{mode}_{batch}".replace(" ", "_")),
            train_file_pattern=os.path.join(data, "train-*"),
            validation_file_pattern=os.path.join(data, "validation-*"),
            batch_size=batch,
            image_size=size,
            max_iters=args.train_steps,
            num_classes=args.num_classes,
            delg_global_features=model == "DELG",
            report_interval=max(1, args.train_steps // 5),
            save_interval=10**9,
            eval_interval=10**9,
            **model_kwargs,
            **extra,
          )
          try:
            result = (batch, train(config).steady_images_per_sec)
            break
          except Exception as error:  # Only an out-of-memory error moves to a smaller batch.
            if not _is_oom(error):
              raise
            print(f"{model} {size} {mode}: batch {batch} does not fit", flush=True)
        if result is None:
          rows.append(Row("training", f"{model} {size} px {mode}", "no batch fits"))
        else:
          batch, images_per_sec = result
          rows.append(
            Row(
              "training",
              f"{model} {size} px {mode}",
              f"{images_per_sec:.1f} images/s",
              f"batch {batch}, {args.num_classes} classes",
            )
          )
  return rows


def extract_rows(args) -> list[Row]:
  import numpy as np
  import tensorflow as tf

  from delf.export import exporter, modules
  from delf.model.delf_model import Delf

  tf.keras.utils.set_random_seed(0)
  model = Delf(
    block3_strides=True,
    use_dim_reduction=False,
    num_classes=None,
    **(TINY_MODEL if args.tiny else {}),
  )
  height, width = (int(v) for v in args.extract_size.split(","))
  scales = tf.constant([float(s) for s in args.extract_scales.split(",")])
  rng = np.random.default_rng(0)
  batch = tf.constant(rng.integers(0, 256, (args.extract_batch, height, width, 3), np.uint8))
  inputs = (scales, tf.constant(1000), tf.constant(0.0))
  rows = []
  for precision in ("float32", "float16", "bfloat16"):
    served = model if precision == "float32" else exporter.reduced_precision_model(model, precision)
    module = modules.LocalFeatureModule(served, block3_strides=True, iou=1.0)
    for batched in (False, True):
      if batched:
        function, images, per_call = module.ExtractFeaturesBatch, batch, args.extract_batch
      else:
        function, images, per_call = module.ExtractFeatures, batch[0], 1

      def call(function=function, images=images):
        return function(images, *inputs)["scores"].numpy()

      call()  # trace + warm-up
      times = []
      for _ in range(args.extract_calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
      rows.append(
        Row(
          "extraction",
          f"DELF {len(scales)}-scale {height}x{width} {precision}"
          + (f", batch {args.extract_batch}" if batched else ""),
          f"{per_call / statistics.median(times):.2f} images/s",
        )
      )
  return rows


def search_rows(args) -> list[Row]:
  try:
    import faiss
  except ImportError:
    return [
      Row("search", f"faiss exact {args.search_size} x {args.search_dim}", "faiss not installed")
    ]
  import numpy as np

  rng = np.random.default_rng(0)
  vectors = rng.standard_normal((args.search_size, args.search_dim), dtype=np.float32)
  queries = rng.standard_normal((args.search_queries, args.search_dim), dtype=np.float32)
  index = faiss.IndexFlatIP(args.search_dim)
  device = "CPU"
  if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
    resources = faiss.StandardGpuResources()
    index = faiss.index_cpu_to_gpu(resources, 0, index)
    device = "GPU"
  start = time.perf_counter()
  index.add(vectors)
  add_s = time.perf_counter() - start
  index.search(queries[:1], 100)  # warm-up
  start = time.perf_counter()
  index.search(queries, 100)
  search_s = time.perf_counter() - start
  # Exact search: the best hit of a stored vector is itself.
  _, self_ids = index.search(vectors[:5], 1)
  assert list(self_ids[:, 0]) == list(range(5)), "exact search did not find the stored vectors"
  return [
    Row(
      "search",
      f"faiss exact IP, {args.search_size} x {args.search_dim}, top 100, {device}",
      f"{args.search_queries / search_s:.0f} queries/s",
      f"add {add_s:.1f} s, {args.search_queries} queries",
    )
  ]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="tiny models and sizes (CPU smoke run)")
  parser.add_argument("--sections", default="training,extraction,search")
  for key, value in REAL.items():
    parser.add_argument(f"--{key}", type=type(value), default=None)
  args = parser.parse_args(argv)
  for key, value in (TINY if args.tiny else REAL).items():
    if getattr(args, key) is None:
      setattr(args, key, value)

  import tensorflow as tf

  gpus = tf.config.list_physical_devices("GPU")
  for gpu in gpus:
    tf.config.experimental.set_memory_growth(gpu, True)
  device = f"{len(gpus)} GPU(s): {[g.name for g in gpus]}" if gpus else "no GPU (CPU only)"
  print(f"gpu_suite: {device}; tiny={args.tiny}", flush=True)
  start = time.perf_counter()
  rows: list[Row] = []
  sections = args.sections.split(",")
  with tempfile.TemporaryDirectory(prefix="delf_gpu_suite_") as work:
    if "training" in sections:
      rows += train_rows(args, work)
    if "extraction" in sections:
      rows += extract_rows(args)
    if "search" in sections:
      rows += search_rows(args)
  print()
  print(
    f"| section | setting | throughput | note |  ({device}, {time.perf_counter() - start:.0f} s)"
  )
  print("| --- | --- | --- | --- |")
  for row in rows:
    print(f"| {row.section} | {row.setting} | {row.value} | {row.note} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
