r"""Builds a search index over global descriptors (a feature store or .delg_global files).

Usage:
  python -m scripts.build_index --features_path=stores/index --index_path=indexes/index_exact
  python -m scripts.build_index --features_path=stores/index --index_path=indexes/index_ivfpq \
    --kind=ivfpq --pq_bytes=64 --nprobe=32
  python -m scripts.build_index --features_path=stores/index --index_path=indexes/index_hnsw \
    --kind=hnsw --reduced_dim=256 --hnsw_m=32 --ef_search=128

Prints the memory the index will take (and what is available) before it starts,
then progress. kind: exact (default; the same ranking as perform_retrieval's dot
product), ivfpq (inverted file + product quantisation, OPQ-rotated: pq_bytes + 8
bytes per vector) or hnsw (graph; optionally over a PCA projection to reduced_dim).
The index remembers the store it was built from and refuses another one.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags
from delf.retrieval import index as search_index
from delf.retrieval import index_jobs

_FEATURES_PATH = flags.DEFINE_string(
  "features_path", None, "Feature store (or folder of .delg_global files) to index.", required=True
)
_INDEX_PATH = flags.DEFINE_string("index_path", None, "Index directory to write.", required=True)
_KIND = flags.DEFINE_enum("kind", "exact", list(search_index.KINDS), "Index kind.")
_NLIST = flags.DEFINE_integer("nlist", 0, "ivfpq: inverted lists (0 = ~4 sqrt(N)).", lower_bound=0)
_PQ_BYTES = flags.DEFINE_integer("pq_bytes", 64, "ivfpq: sub-quantisers per code.", lower_bound=1)
_PQ_BITS = flags.DEFINE_integer("pq_bits", 8, "ivfpq: bits per sub-quantiser.", lower_bound=1)
_OPQ = flags.DEFINE_boolean(
  "opq", True, "ivfpq: learn an OPQ rotation (and project to 4*pq_bytes)."
)
_NPROBE = flags.DEFINE_integer("nprobe", 32, "ivfpq: lists scanned per query.", lower_bound=1)
_HNSW_M = flags.DEFINE_integer("hnsw_m", 32, "hnsw: links per node.", lower_bound=2)
_EF_CONSTRUCTION = flags.DEFINE_integer("ef_construction", 64, "hnsw: build beam.", lower_bound=1)
_EF_SEARCH = flags.DEFINE_integer("ef_search", 128, "hnsw: search beam.", lower_bound=1)
_REDUCED_DIM = flags.DEFINE_integer(
  "reduced_dim", 0, "Project to this many dimensions (uncentred PCA) first (0 = no).", lower_bound=0
)
_TRAIN_SIZE = flags.DEFINE_integer(
  "train_size", 0, "Training vectors (0 = a default per kind).", lower_bound=0
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  try:
    spec = search_index.IndexSpec(
      kind=_KIND.value,
      nlist=_NLIST.value,
      pq_bytes=_PQ_BYTES.value,
      pq_bits=_PQ_BITS.value,
      opq=_OPQ.value,
      nprobe=_NPROBE.value,
      hnsw_m=_HNSW_M.value,
      ef_construction=_EF_CONSTRUCTION.value,
      ef_search=_EF_SEARCH.value,
      reduced_dim=_REDUCED_DIM.value,
      train_size=_TRAIN_SIZE.value,
    )
    index_jobs.build_index(index_jobs.BuildConfig(_FEATURES_PATH.value, _INDEX_PATH.value, spec))
  except (OSError, ValueError) as e:
    raise SystemExit(f"build_index: {e}") from None


if __name__ == "__main__":
  cli_flags.run(main)
