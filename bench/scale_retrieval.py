r"""Benchmark: retrieval at GLDv2 scale on synthetic descriptors (issue 10).

Parts (each runs in its own process, so that peak memory is per part):

* ``gemm``: the machine's float32 GEMM rate (NumPy, [1000 x 2048] x [2048 x 65536]).
* ``data``: writes N unit-norm 2048-D descriptors into a feature store, in clusters
  around a 64-D latent manifold (like real global descriptors, whose intrinsic
  dimension is far below 2048), plus 1,000 queries each with 5 planted
  near-duplicates in the index (so that recall is meaningful); reports the store's
  write rate and the read rate of all global descriptors (GB/s, page cache warm).
* ``exact``: exact faiss index (the default kind), 1,000 queries, top-100; queries/s,
  effective GFLOP/s against the GEMM rate, peak RSS; saves the exact top-100.
* ``ivfpq`` / ``hnsw``: build time, bytes per vector, queries/s and recall@100
  against the exact top-100, for several search settings, with and without exact
  re-scoring of 4 x 100 candidates from the store's memory map.
* ``rerank``: geometric-verification pairs/s with 1000 x 128-D local features per
  image on 1 and 2 worker processes, and the projected GLDv2 retrieval time.
* ``io``: extraction write overhead (per-image files vs store) and read rates.

Usage (figures go to BENCHMARKS.md; run under the exclusive lock):
  flock -x /tmp/delf-cpu.lock python -m bench.scale_retrieval --num_vectors=1000000 \
    --parts=gemm,data,exact,ivfpq,hnsw --work_dir=/tmp/scale_bench
  python -m bench.scale_retrieval --parts=rerank,io --work_dir=/tmp/scale_bench
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

DIM = 2048
LATENT = 64
NUM_QUERIES = 1000
DUPLICATES_PER_QUERY = 5
K = 100


def _peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _emit(result: dict) -> None:
  print("RESULT " + json.dumps(result), flush=True)


def part_gemm(args) -> None:
  rng = np.random.default_rng(0)
  a = rng.standard_normal((NUM_QUERIES, DIM), dtype=np.float32)
  b = rng.standard_normal((65536, DIM), dtype=np.float32)
  a @ b[:4096].T
  best = 0.0
  for _ in range(3):
    start = time.perf_counter()
    a @ b.T
    best = max(best, 2 * a.shape[0] * b.shape[0] * DIM / (time.perf_counter() - start) / 1e9)
  _emit({"part": "gemm", "gflops": best})


def _generator(seed: int):
  rng = np.random.default_rng(seed)
  basis = rng.standard_normal((LATENT, DIM), dtype=np.float32) / np.sqrt(LATENT)
  centers = rng.standard_normal((4096, LATENT), dtype=np.float32) * 1.5
  return rng, basis, centers


def _unit(x: np.ndarray) -> np.ndarray:
  x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
  return x


_NOISE_POOL: list[np.ndarray] = []


def _vectors(rng, basis, centers, n: int) -> np.ndarray:
  """Cluster centre + latent Gaussian (64-D manifold) + isotropic noise, unit norm.

  The isotropic part (about 1/3 of each vector's norm) is drawn from a pool of
  65,536 noise rows with random signs per row: generating 2 G fresh normals per
  million vectors would dominate the benchmark's run time.
  """
  if not _NOISE_POOL:
    pool_rng = np.random.default_rng(12345)
    _NOISE_POOL.append(
      pool_rng.standard_normal((65536, DIM), dtype=np.float32)
      * np.float32(0.35 * np.sqrt(LATENT / DIM))
    )
  z = centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, LATENT), dtype=np.float32)
  x = z @ basis
  signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=(n, 1))
  x += _NOISE_POOL[0][rng.integers(0, 65536, n)] * signs
  return _unit(x)


def part_data(args) -> None:
  from delf import feature_store

  store_path = os.path.join(args.work_dir, "store")
  shutil.rmtree(store_path, ignore_errors=True)
  rng, basis, centers = _generator(0)
  queries = _vectors(rng, basis, centers, NUM_QUERIES)
  # Near-duplicates of each query at random rows of the index.
  planted_rows = rng.choice(args.num_vectors, NUM_QUERIES * DUPLICATES_PER_QUERY, replace=False)
  planted = {int(r): i // DUPLICATES_PER_QUERY for i, r in enumerate(planted_rows)}
  np.save(os.path.join(args.work_dir, "queries.npy"), queries)
  block = 50_000
  generate_seconds = write_seconds = 0.0
  with feature_store.StoreWriter(
    store_path, images_per_file=block, has_local=False, dtype=args.dtype
  ) as writer:
    for start in range(0, args.num_vectors, block):
      t0 = time.perf_counter()
      n = min(block, args.num_vectors - start)
      x = _vectors(rng, basis, centers, n)
      for r in range(start, start + n):
        q = planted.get(r)
        if q is not None:
          noisy = queries[q] + 0.08 * rng.standard_normal(DIM, dtype=np.float32) / np.sqrt(DIM)
          x[r - start] = noisy / np.linalg.norm(noisy)
      t1 = time.perf_counter()
      # The writer's API is per image, as extraction calls it.
      for i in range(n):
        writer.add(f"{start + i:07d}", x[i])
      write_seconds += time.perf_counter() - t1
      generate_seconds += t1 - t0
  total_bytes = sum(
    os.path.getsize(os.path.join(store_path, f))
    for f in os.listdir(store_path)
    if f.endswith(".h5")
  )
  store = feature_store.FeatureStore(store_path)
  reads = []
  for _ in range(2):
    start = time.perf_counter()
    matrix = store.read_global()
    reads.append(time.perf_counter() - start)
    del matrix
  start = time.perf_counter()
  checksum = 0.0
  for _, b in store.iter_global_blocks():
    checksum += float(b[:, 0].sum())
  stream_seconds = time.perf_counter() - start
  _emit(
    {
      "part": "data",
      "num_vectors": args.num_vectors,
      "dtype": args.dtype,
      "store_bytes": total_bytes,
      "generate_s": generate_seconds,
      "write_s": write_seconds,
      "write_images_per_s": args.num_vectors / write_seconds,
      "read_all_s": min(reads),
      "read_gb_per_s": args.num_vectors * DIM * 4 / min(reads) / 1e9,
      "stream_gb_per_s": args.num_vectors * DIM * 4 / stream_seconds / 1e9,
      "peak_rss_gb": _peak_rss_gb(),
    }
  )


def _store(args):
  from delf import feature_store

  return feature_store.FeatureStore(os.path.join(args.work_dir, "store"))


def part_exact(args) -> None:
  for size in args.exact_sizes.split(",") if args.exact_sizes else [args.num_vectors]:
    _exact(args, int(size))


def _exact(args, size: int) -> None:
  from delf.retrieval import index as search_index

  store = _store(args)
  n = min(size, store.num_images)
  queries = np.load(os.path.join(args.work_dir, "queries.npy"))
  start = time.perf_counter()
  index = search_index.GlobalIndex(search_index.IndexSpec(), DIM, num_vectors_hint=n)
  added = 0
  for _, block in store.iter_global_blocks():
    block = block[: n - added]
    index.add(block)
    added += len(block)
    if added >= n:
      break
  build_seconds = time.perf_counter() - start
  index.search(queries[:50], K)  # Warm-up.
  start = time.perf_counter()
  result = index.search(queries, K)
  seconds = time.perf_counter() - start
  np.save(os.path.join(args.work_dir, f"exact_top{K}_{n}.npy"), result.rows)
  if args.float16_check and n <= args.float16_check:
    # The same search over float16-rounded vectors (what a float16 store holds).
    half = search_index.GlobalIndex(search_index.IndexSpec(), DIM, num_vectors_hint=n)
    added = 0
    for _, block in store.iter_global_blocks():
      block = block[: n - added].astype(np.float16).astype(np.float32)
      half.add(block)
      added += len(block)
      if added >= n:
        break
    half_rows = half.search(queries, K).rows
    del half
    _emit(
      {
        "part": "float16",
        "num_vectors": n,
        "recall_at_100_vs_float32": _recall(half_rows, result.rows),
        "same_top1": float(np.mean(half_rows[:, 0] == result.rows[:, 0])),
        "identical_top100_lists": float(np.mean(np.all(half_rows == result.rows, axis=1))),
      }
    )
  _emit(
    {
      "part": "exact",
      "num_vectors": n,
      "load_s": build_seconds,
      "search_s": seconds,
      "queries_per_s": len(queries) / seconds,
      "gflops": 2 * len(queries) * n * DIM / seconds / 1e9,
      "peak_rss_gb": _peak_rss_gb(),
    }
  )


def _recall(rows: np.ndarray, exact: np.ndarray) -> float:
  return float(np.mean([len(set(r) & set(e)) / len(e) for r, e in zip(rows, exact)]))


def _approximate(args, spec, settings: list[dict], name: str) -> None:
  from delf.retrieval import index as search_index

  store = _store(args)
  n = min(getattr(args, f"{name}_vectors") or args.num_vectors, store.num_images)
  queries = np.load(os.path.join(args.work_dir, "queries.npy"))
  exact = np.load(os.path.join(args.work_dir, f"exact_top{K}_{n}.npy"))
  vectors = search_index.StoreVectors(store)
  start = time.perf_counter()
  sample = vectors(np.unique(np.linspace(0, n - 1, spec.resolved_train_size(n)).astype(np.int64)))
  index = search_index.GlobalIndex(spec, DIM, num_vectors_hint=n)
  index.train(sample)
  del sample
  train_seconds = time.perf_counter() - start
  added = 0
  for _, block in store.iter_global_blocks():
    block = block[: n - added]
    index.add(block)
    added += len(block)
    if added >= n:
      break
  build_seconds = time.perf_counter() - start
  bytes_per_vector = index.bytes_per_vector()
  wanted = args.refine_sources.split(",")
  # "gather": the generic path for plain ``rows -> vectors`` callables (a copy of the
  # candidates, then NumPy), against StoreVectors' in-place faiss scoring.
  sources = {"store": vectors, "gather": lambda rows: vectors(rows)}
  if "memory" in wanted:
    # The vectors in RAM (8.2 GB at 1M x 2048 float32): what a machine with room for them
    # gets, instead of gathering the candidates from the store's memory maps.
    start = time.perf_counter()
    matrix = store.read_global()[:n]
    print(f"loaded {n} vectors into memory in {time.perf_counter() - start:.1f} s", flush=True)
    sources["memory"] = search_index.MemoryVectors(matrix)
  sources = {name: source for name, source in sources.items() if name in wanted}
  runs = [
    (refine, source)
    for refine in (int(f) for f in args.refine_factors.split(","))
    for source in (sources if refine else [""])
  ]
  for setting in settings:
    index.spec = dataclasses.replace(index.spec, **setting)
    for refine, source in runs:
      kwargs = {"refine_vectors": sources[source], "refine_factor": refine} if refine else {}
      index.search(queries[:20], K, **kwargs)
      start = time.perf_counter()
      result = index.search(queries, K, **kwargs)
      seconds = time.perf_counter() - start
      _emit(
        {
          "part": name,
          "num_vectors": n,
          "setting": setting,
          "refine_factor": refine,
          "refine_source": source,
          "train_s": train_seconds,
          "build_s": build_seconds,
          "bytes_per_vector": bytes_per_vector,
          "queries_per_s": len(queries) / seconds,
          "recall_at_100": _recall(result.rows, exact),
          "peak_rss_gb": _peak_rss_gb(),
        }
      )


def part_ivfpq(args) -> None:
  from delf.retrieval import index as search_index

  spec = search_index.IndexSpec(
    kind="ivfpq", nlist=args.nlist, pq_bytes=args.pq_bytes, train_size=args.train_size
  )
  nprobes = [int(p) for p in args.ivfpq_nprobes.split(",")]
  _approximate(args, spec, [{"nprobe": p} for p in nprobes], "ivfpq")


def part_hnsw(args) -> None:
  from delf.retrieval import index as search_index

  spec = search_index.IndexSpec(
    kind="hnsw", reduced_dim=args.hnsw_dim, hnsw_m=args.hnsw_m, ef_construction=64,
    train_size=args.train_size,
  )  # fmt: skip
  _approximate(args, spec, [{"ef_search": e} for e in (64, 128, 256)], "hnsw")


def part_rerank(args) -> None:
  from bench.retrieval import make_benchmark
  from delf import feature_conversion
  from delf.retrieval import rerank_parallel, reranking, revisited

  root = os.path.join(args.work_dir, "rerank")
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(root)
  dataset = make_benchmark(root, args.rerank_queries, args.rerank_index, 1000)
  with open(os.devnull, "w") as quiet:
    for split in ("query", "index"):
      feature_conversion.files_to_store(
        os.path.join(root, split), os.path.join(root, f"{split}_store"), out=quiet
      )
  query_list, index_list, _ = revisited.ReadDatasetFile(dataset)
  pairs = {q: list(index_list) for q in query_list}
  options = reranking.MatchingOptions(
    ransac_seed=0, descriptor_matching_threshold=1.0, ransac_residual_threshold=20.0
  )
  results = {}
  for workers in (1, 2):
    for source in ("files", "store"):
      suffix = "_store" if source == "store" else ""
      stats = rerank_parallel.VerificationStats()
      inliers = rerank_parallel.VerifyPairsInProcesses(
        pairs,
        rerank_parallel.FeatureSource(os.path.join(root, "query" + suffix)),
        rerank_parallel.FeatureSource(os.path.join(root, "index" + suffix)),
        options,
        num_workers=workers,
        stats=stats,
      )
      results.setdefault("inliers", inliers)
      if inliers != results["inliers"]:
        raise SystemExit("inlier counts depend on the number of workers or the source")
      _emit(
        {
          "part": "rerank",
          "workers": workers,
          "source": source,
          "pairs": stats.num_pairs,
          "seconds": stats.seconds,
          "pairs_per_s": stats.pairs_per_second,
          "gldv2_hours_per_core": 117_577 * 100 / stats.pairs_per_second * workers / 3600,
        }
      )


def part_io(args) -> None:
  """Extraction write overhead: per-image files vs the store, for DELG features."""
  from delf import datum_io, feature_io, feature_store

  rng = np.random.default_rng(0)
  n = args.io_images
  global_descriptors = _unit(rng.standard_normal((n, DIM), dtype=np.float32))
  local = (
    rng.uniform(0, 500, (1000, 2)).astype(np.float32),
    np.ones(1000, np.float32),
    _unit(rng.standard_normal((1000, 128), dtype=np.float32)),
    np.ones(1000, np.float32),
  )
  root = tempfile.mkdtemp(dir=args.work_dir)
  files = os.path.join(root, "files")
  os.makedirs(files)
  start = time.perf_counter()
  for i in range(n):
    datum_io.WriteToFile(global_descriptors[i], os.path.join(files, f"{i:06d}.delg_global"))
    feature_io.WriteToFile(os.path.join(files, f"{i:06d}.delg_local"), *local)
  files_seconds = time.perf_counter() - start
  start = time.perf_counter()
  with feature_store.StoreWriter(os.path.join(root, "store"), images_per_file=500) as writer:
    for i in range(n):
      writer.add(f"{i:06d}", global_descriptors[i], local)
  store_seconds = time.perf_counter() - start
  start = time.perf_counter()
  from delf.retrieval import retrieval

  with open(os.devnull, "w") as quiet:
    retrieval.LoadGlobalDescriptors(files, [f"{i:06d}" for i in range(n)], out=quiet)
  files_read = time.perf_counter() - start
  store = feature_store.FeatureStore(os.path.join(root, "store"))
  start = time.perf_counter()
  store.read_global()
  store_read = time.perf_counter() - start
  start = time.perf_counter()
  for i in range(0, n, max(1, n // 200)):
    store.local_features(f"{i:06d}")
  local_read = (time.perf_counter() - start) / len(range(0, n, max(1, n // 200)))
  start = time.perf_counter()
  for i in range(0, n, max(1, n // 200)):
    feature_io.ReadFromFile(os.path.join(files, f"{i:06d}.delg_local"))
  file_local_read = (time.perf_counter() - start) / len(range(0, n, max(1, n // 200)))
  shutil.rmtree(root, ignore_errors=True)
  _emit(
    {
      "part": "io",
      "images": n,
      "files_write_ms_per_image": 1000 * files_seconds / n,
      "store_write_ms_per_image": 1000 * store_seconds / n,
      "files_global_read_gb_per_s": n * DIM * 4 / files_read / 1e9,
      "store_global_read_gb_per_s": n * DIM * 4 / store_read / 1e9,
      "files_local_read_ms": 1000 * file_local_read,
      "store_local_read_ms": 1000 * local_read,
    }
  )


PARTS = {
  "gemm": part_gemm,
  "data": part_data,
  "exact": part_exact,
  "ivfpq": part_ivfpq,
  "hnsw": part_hnsw,
  "rerank": part_rerank,
  "io": part_io,
}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", default="gemm,data,exact,ivfpq,hnsw,rerank,io")
  parser.add_argument("--work_dir", default="/tmp/scale_bench")
  parser.add_argument("--num_vectors", type=int, default=1_000_000)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--float16_check", type=int, default=200_000, help="up to this size")
  parser.add_argument("--exact_sizes", default="", help="e.g. 1000000,761757,200000")
  parser.add_argument("--ivfpq_vectors", type=int, default=0, help="0 = --num_vectors")
  parser.add_argument("--hnsw_vectors", type=int, default=0, help="0 = --num_vectors")
  parser.add_argument("--nlist", type=int, default=1024)
  parser.add_argument("--pq_bytes", type=int, default=64)
  parser.add_argument("--ivfpq_nprobes", default="8,32,128", help="IVF lists probed, per row")
  parser.add_argument("--refine_factors", default="0,4", help="0 = no exact re-scoring")
  parser.add_argument(
    "--refine_sources",
    default="store",
    help="re-score from: store (memory maps, scored in place), gather (memory maps, copied "
    "then scored), memory (all vectors in RAM)",
  )
  parser.add_argument("--train_size", type=int, default=50_000)
  parser.add_argument("--hnsw_dim", type=int, default=128)
  parser.add_argument("--hnsw_m", type=int, default=32)
  parser.add_argument("--rerank_queries", type=int, default=4)
  parser.add_argument("--rerank_index", type=int, default=100)
  parser.add_argument("--io_images", type=int, default=2000)
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  os.makedirs(args.work_dir, exist_ok=True)
  if args.child:
    PARTS[args.child](args)
    return
  for part in args.parts.split(","):
    command = [sys.executable, "-m", "bench.scale_retrieval", *sys.argv[1:], f"--child={part}"]
    start = time.perf_counter()
    print(f"=== {part}", flush=True)
    env = dict(os.environ)
    if part == "rerank":
      # One BLAS thread in the 1-worker run too: the comparison is 1 vs 2 processes.
      env["OPENBLAS_NUM_THREADS"] = "1"
    subprocess.run(command, check=True, env=env)
    print(f"=== {part}: {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
  main()
