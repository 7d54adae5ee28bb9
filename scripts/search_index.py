r"""Searches an index with query descriptors and writes the top-k of each query to a CSV.

Usage:
  python -m scripts.search_index --index_path=indexes/index_exact --queries_path=stores/test \
    --output_path=topk.csv [--k=100] [--index_features_path=stores/index]
  # array job over the queries, then one merge:
  python -m scripts.search_index ... --num_shards=8 --shard_index=$i
  python -m scripts.search_index --output_path=topk.csv --num_shards=8 --merge_shards

Output: `id,images,scores` (space-separated index ids and scores, best first); the
first two columns are the Kaggle retrieval format. With --index_features_path (the
store the index was built from) the index is checked against it, and approximate
indexes re-score their best refine_factor*k candidates exactly. --nprobe (IVF-PQ)
and --ef_search (HNSW) change the speed/recall trade-off without rebuilding the index
(measured settings: BENCHMARKS.md, "Retrieval at GLDv2 scale").
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags
from delf.retrieval import index_jobs

_INDEX_PATH = flags.DEFINE_string("index_path", "", "Index directory (build_index.py).")
_QUERIES_PATH = flags.DEFINE_string(
  "queries_path", "", "Query feature store or .delg_global folder."
)
_OUTPUT_PATH = flags.DEFINE_string("output_path", "", "CSV to write.")
_K = flags.DEFINE_integer("k", 100, "Results per query.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1024, "Queries per search call.", lower_bound=1)
_INDEX_FEATURES_PATH = flags.DEFINE_string(
  "index_features_path", "", "The store the index was built from (check + exact re-scoring)."
)
_REFINE_FACTOR = flags.DEFINE_integer(
  "refine_factor",
  4,
  "Approximate indexes: re-score refine_factor*k candidates exactly "
  "(needs --index_features_path; 0 = off).",
  lower_bound=0,
)
_NPROBE = flags.DEFINE_integer(
  "nprobe", 0, "ivfpq: lists scanned per query (0 = the index's own).", lower_bound=0
)
_EF_SEARCH = flags.DEFINE_integer(
  "ef_search", 0, "hnsw: search breadth (0 = the index's own).", lower_bound=0
)
_NUM_SHARDS = flags.DEFINE_integer(
  "num_shards", 1, "Split the queries into this many shards.", lower_bound=1
)
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "This process's shard.", lower_bound=0)
_MERGE_SHARDS = flags.DEFINE_boolean(
  "merge_shards", False, "Concatenate the --num_shards shard files into --output_path and exit."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  if not _OUTPUT_PATH.value:
    raise app.UsageError("--output_path is required")
  try:
    if _MERGE_SHARDS.value:
      index_jobs.merge_shards(_OUTPUT_PATH.value, _NUM_SHARDS.value)
      return
    if not (_INDEX_PATH.value and _QUERIES_PATH.value):
      raise app.UsageError("--index_path and --queries_path are required")
    index_jobs.search_to_csv(
      index_jobs.SearchConfig(
        index_path=_INDEX_PATH.value,
        queries_path=_QUERIES_PATH.value,
        output_path=_OUTPUT_PATH.value,
        k=_K.value,
        batch_size=_BATCH_SIZE.value,
        index_features_path=_INDEX_FEATURES_PATH.value,
        refine_factor=_REFINE_FACTOR.value,
        nprobe=_NPROBE.value,
        ef_search=_EF_SEARCH.value,
        num_shards=_NUM_SHARDS.value,
        shard_index=_SHARD_INDEX.value,
      )
    )
  except (OSError, ValueError) as e:
    raise SystemExit(f"search_index: {e}") from None


if __name__ == "__main__":
  cli_flags.run(main)
