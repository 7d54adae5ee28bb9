"""Ranks Revisited Oxford/Paris index images for each query with DELG features.

Usage:
  python -m scripts.perform_retrieval \
    --dataset_file_path=gnd_roxford5k.mat \
    --query_features_dir=features/query --index_features_dir=features/index \
    [--use_geometric_verification] --output_dir=results

Reads ``<name>.delg_global`` (and, with --use_geometric_verification,
``<name>.delg_local``) files written by extract_delg_features.py, ranks by
global-descriptor similarity, optionally re-ranks the top 100 by local-feature
RANSAC inliers, and writes medium/hard mAP, mP@k and mR@k (k = 1, 5, 10) to
``<output_dir>/metrics.txt`` (keys ``medium``, ``hard`` and, with verification,
``medium_after_gv``, ``hard_after_gv``). The dataset file may be a gnd_*.mat,
a JSON or a revisitop .pkl ground truth (see delf/retrieval/revisited.py).

Beyond the reference: either features folder may be a feature store
(extract_delg_features.py --output_store); --index_path ranks with an index built by
build_index.py (exact: the same metrics as without it); --query_expansion_top_n and
--dba_top_n turn on alpha-QE and database-side augmentation (off by default);
re-ranking runs in --num_workers processes (default: all cores; same result).
"""

from __future__ import annotations

from absl import flags

from delf import cli_flags
from delf.retrieval import rerank_parallel, retrieval

_DATASET_FILE_PATH = flags.DEFINE_string(
  "dataset_file_path",
  "/tmp/gnd_roxford5k.mat",
  "Dataset file for Revisited Oxford or Paris (gnd_*.mat; .json and .pkl also accepted).",
)
_QUERY_FEATURES_DIR = flags.DEFINE_string(
  "query_features_dir",
  "/tmp/features/query",
  "Directory where query DELG features (.delg_global, .delg_local) are located.",
)
_INDEX_FEATURES_DIR = flags.DEFINE_string(
  "index_features_dir",
  "/tmp/features/index",
  "Directory where index DELG features (.delg_global, .delg_local) are located.",
)
_USE_GEOMETRIC_VERIFICATION = flags.DEFINE_boolean(
  "use_geometric_verification",
  False,
  "If True, re-rank the top 100 global results by local-feature geometric verification.",
)
_LOCAL_DESCRIPTOR_MATCHING_THRESHOLD = flags.DEFINE_float(
  "local_descriptor_matching_threshold",
  1.0,
  "Optional, only used if --use_geometric_verification: local descriptors are matched if "
  "their distance is strictly below this (or, with --use_ratio_test, the ratio of the two "
  "nearest distances is below it).",
)
_RANSAC_RESIDUAL_THRESHOLD = flags.DEFINE_float(
  "ransac_residual_threshold",
  20.0,
  "Optional, only used if --use_geometric_verification: RANSAC inlier residual threshold, "
  "in pixels.",
)
_USE_RATIO_TEST = flags.DEFINE_boolean(
  "use_ratio_test",
  False,
  "Optional, only used if --use_geometric_verification: use Lowe's ratio test instead of "
  "the distance bound for local descriptor matching.",
)
_ALLOW_MISSING_FEATURES = flags.DEFINE_boolean(
  "allow_missing_features",
  False,
  "Rank images whose feature files are missing or malformed last (zero global descriptor, "
  "0 inliers) instead of stopping with an error; metrics.txt then ends with '#' lines "
  "saying how many.",
)
_OUTPUT_DIR = flags.DEFINE_string(
  "output_dir",
  "/tmp/retrieval",
  "Directory where retrieval output (metrics.txt) will be written.",
)


_NUM_WORKERS = flags.DEFINE_integer(
  "num_workers",
  rerank_parallel.default_num_workers(),
  "Processes for geometric verification (default: all cores); the result does not depend on it.",
  lower_bound=1,
)
_INDEX_PATH = flags.DEFINE_string(
  "index_path",
  "",
  "Optional search index (build_index.py) over the index images' global descriptors; "
  "images in it but not in the dataset act as distractors.",
)
_QUERY_EXPANSION_TOP_N = flags.DEFINE_integer(
  "query_expansion_top_n",
  0,
  "Alpha query expansion with this many top results (0 = off, the reference).",
  lower_bound=0,
)
_QUERY_EXPANSION_ALPHA = flags.DEFINE_float(
  "query_expansion_alpha", 3.0, "Exponent of the similarity weights of alpha-QE."
)
_DBA_TOP_N = flags.DEFINE_integer(
  "dba_top_n",
  0,
  "Database-side augmentation with this many neighbours, the image included (0 = off).",
  lower_bound=0,
)
_DBA_ALPHA = flags.DEFINE_float("dba_alpha", 3.0, "Exponent of the similarity weights of DBA.")


def main(argv):
  if len(argv) > 1:
    raise RuntimeError("Too many command-line arguments.")
  config = retrieval.RetrievalConfig(
    dataset_file_path=_DATASET_FILE_PATH.value,
    query_features_dir=_QUERY_FEATURES_DIR.value,
    index_features_dir=_INDEX_FEATURES_DIR.value,
    use_geometric_verification=_USE_GEOMETRIC_VERIFICATION.value,
    local_descriptor_matching_threshold=_LOCAL_DESCRIPTOR_MATCHING_THRESHOLD.value,
    ransac_residual_threshold=_RANSAC_RESIDUAL_THRESHOLD.value,
    use_ratio_test=_USE_RATIO_TEST.value,
    output_dir=_OUTPUT_DIR.value,
    num_workers=_NUM_WORKERS.value,
    index_path=_INDEX_PATH.value,
    query_expansion_top_n=_QUERY_EXPANSION_TOP_N.value,
    query_expansion_alpha=_QUERY_EXPANSION_ALPHA.value,
    dba_top_n=_DBA_TOP_N.value,
    dba_alpha=_DBA_ALPHA.value,
    allow_missing_features=_ALLOW_MISSING_FEATURES.value,
  )
  try:
    retrieval.perform_retrieval(config)
  except (OSError, ValueError) as e:
    raise SystemExit(f"perform_retrieval: {e}") from None


if __name__ == "__main__":
  cli_flags.run(main)
