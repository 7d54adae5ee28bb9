r"""GLDv2 retrieval or recognition predictions in the Kaggle CSV format.

Usage:
  # Retrieval: test queries against the index set -> id,images (100 ids each)
  python -m scripts.gldv2_submission --task=retrieval --queries_path=stores/test \
    --index_path=indexes/index --index_features_path=stores/index \
    [--use_geometric_verification] --output_path=retrieval_predictions.csv
  # Recognition: test queries against the train set -> id,landmarks ("<landmark_id> <score>")
  python -m scripts.gldv2_submission --task=recognition --queries_path=stores/test \
    --index_path=indexes/train --index_features_path=stores/train \
    --labels_path=gldv2_dataset/train/train.csv --output_path=recognition_predictions.csv
  # Array job over the queries (--num_shards=N --shard_index=i), then once:
  python -m scripts.gldv2_submission --output_path=... --num_shards=N --merge_shards

Score them with compute_retrieval_metrics.py / compute_recognition_metrics.py.
Recognition labels each query by k-NN voting (--k, default 5): each neighbour votes
for its landmark with its similarity (plus its inlier count with verification); the
confidence is the winning vote divided by k. Retrieval re-ranks the top
--num_to_rerank by (inliers, similarity) with verification, in --num_workers processes.
"""

from __future__ import annotations

from absl import app, flags

from delf import cli_flags
from delf.retrieval import gldv2_tasks, index_jobs, rerank_parallel

_TASK = flags.DEFINE_enum("task", "retrieval", ["retrieval", "recognition"], "Which GLDv2 task.")
_QUERIES_PATH = flags.DEFINE_string("queries_path", "", "Test-query feature store or folder.")
_INDEX_PATH = flags.DEFINE_string(
  "index_path", "", "Index (build_index.py) of the index/train set."
)
_INDEX_FEATURES_PATH = flags.DEFINE_string(
  "index_features_path",
  "",
  "Store (or folder) the index was built from: checked, and its "
  "local features used for verification.",
)
_QUERY_LOCAL_PATH = flags.DEFINE_string(
  "query_local_path", "", "Queries' local features if not in --queries_path."
)
_LABELS_PATH = flags.DEFINE_string(
  "labels_path", "", "Recognition: CSV with columns id,landmark_id for the indexed images."
)
_OUTPUT_PATH = flags.DEFINE_string("output_path", "", "CSV to write.")
_K = flags.DEFINE_integer(
  "k",
  0,
  "Retrieval: results per query (0 = 100); recognition: voting neighbours (0 = 5).",
  lower_bound=0,
)
_USE_GEOMETRIC_VERIFICATION = flags.DEFINE_boolean(
  "use_geometric_verification", False, "Re-rank / re-weight by local-feature RANSAC inliers."
)
_NUM_TO_RERANK = flags.DEFINE_integer(
  "num_to_rerank", 100, "Candidates verified per query.", lower_bound=1
)
_LOCAL_DESCRIPTOR_MATCHING_THRESHOLD = flags.DEFINE_float(
  "local_descriptor_matching_threshold", 1.0, "Local descriptor distance bound (or ratio)."
)
_RANSAC_RESIDUAL_THRESHOLD = flags.DEFINE_float(
  "ransac_residual_threshold", 20.0, "RANSAC inlier residual threshold in pixels."
)
_USE_RATIO_TEST = flags.DEFINE_boolean("use_ratio_test", False, "Lowe's ratio test.")
_NUM_WORKERS = flags.DEFINE_integer(
  "num_workers",
  rerank_parallel.default_num_workers(),
  "Verification processes (default: all cores).",
  lower_bound=1,
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
    if not (_QUERIES_PATH.value and _INDEX_PATH.value):
      raise app.UsageError("--queries_path and --index_path are required")
    config = gldv2_tasks.TaskConfig(
      queries_path=_QUERIES_PATH.value,
      index_path=_INDEX_PATH.value,
      output_path=_OUTPUT_PATH.value,
      index_features_path=_INDEX_FEATURES_PATH.value,
      query_local_path=_QUERY_LOCAL_PATH.value,
      labels_path=_LABELS_PATH.value,
      k=_K.value,
      use_geometric_verification=_USE_GEOMETRIC_VERIFICATION.value,
      num_to_rerank=_NUM_TO_RERANK.value,
      local_descriptor_matching_threshold=_LOCAL_DESCRIPTOR_MATCHING_THRESHOLD.value,
      ransac_residual_threshold=_RANSAC_RESIDUAL_THRESHOLD.value,
      use_ratio_test=_USE_RATIO_TEST.value,
      num_workers=_NUM_WORKERS.value,
      num_shards=_NUM_SHARDS.value,
      shard_index=_SHARD_INDEX.value,
    )
    if _TASK.value == "retrieval":
      gldv2_tasks.retrieval_submission(config)
    else:
      gldv2_tasks.recognition_submission(config)
  except (OSError, ValueError) as e:
    raise SystemExit(f"gldv2_submission: {e}") from None


if __name__ == "__main__":
  cli_flags.run(main)
