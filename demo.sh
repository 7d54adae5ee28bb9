#!/usr/bin/env bash
# The whole DELF/DELG pipeline on the built-in demo data, with the same command
# lines a user runs on GLDv2 / Revisited Oxford (only paths and sizes differ).
#
#   bash demo.sh [OUTPUT_DIR]      (default: demo_output; `make demo` sets up the venv first)
#
# Steps: demo GLDv2-layout dataset -> TFRecords -> a short DELG training run
# (real ResNet-50 with the autoencoder, random init: no ImageNet weights offline)
# -> exports -> DELF local features of two views of one landmark -> matching picture
# -> a small Revisited-Oxford-format benchmark -> DELG extraction -> retrieval metrics
# -> the same in the GLDv2 format (feature stores, faiss index, Kaggle CSVs and metrics).
# It ends with a summary (scripts/summarize_demo.py): each stage's time and key figure, the
# attention accuracy, and the files to open. Training runs with --deterministic, so every
# run on the same machine prints the same numbers.
# Re-running skips the steps whose outputs exist (delete OUTPUT_DIR to start over).
set -euo pipefail

OUT="${1:-demo_output}"
PY="${PYTHON:-python}"
# The recipe (README, "Demo results"); the DEMO_* variables are for experiments.
TRAIN_STEPS="${DEMO_TRAIN_STEPS:-600}"
IMAGE_SIZE="${DEMO_IMAGE_SIZE:-64}"
INITIAL_LR="${DEMO_INITIAL_LR:-0.01}"
ATTENTION_LOSS_WEIGHT="${DEMO_ATTENTION_LOSS_WEIGHT:-20}"
SEED="${DEMO_SEED:-0}"
mkdir -p "$OUT/logs"
# TensorFlow's start-up lines are hidden by the scripts themselves (pass --verbosity=0 to see them).

# Each stage's wall time goes to $TIMINGS (stage<TAB>seconds) for the closing summary;
# the printed output of the steps the summary quotes is kept under $OUT/logs/.
TIMINGS="$OUT/logs/timings.tsv"
: > "$TIMINGS"
STAGE=""
STAGE_START=0
now() { date +%s.%N; }
end_stage() {
  if [ -n "$STAGE" ]; then
    awk -v s="$STAGE" -v a="$STAGE_START" -v b="$(now)" 'BEGIN { printf "%s\t%.1f\n", s, b - a }' \
      >> "$TIMINGS"
  fi
  STAGE=""
}
# stage KEY TITLE: ends the previous stage, prints TITLE, starts timing KEY.
stage() { end_stage; STAGE="$1"; STAGE_START="$(now)"; shift; printf '\n=== %s\n' "$*"; }

stage dataset "1/9 Demo dataset in the GLDv2 layout (real photos, random views)"
if [ ! -f "$OUT/gldv2_dataset/train/train_clean.csv" ]; then
  "$PY" scripts/make_demo_dataset.py --output_dir="$OUT/gldv2_dataset" --seed=0
fi

stage build "2/9 TFRecords with a stratified train/validation split"
if [ ! -f "$OUT/tfrecord/dataset_metadata.json" ]; then
  "$PY" scripts/build_image_dataset.py \
    --train_csv_path="$OUT/gldv2_dataset/train/train.csv" \
    --train_clean_csv_path="$OUT/gldv2_dataset/train/train_clean.csv" \
    --train_directory="$OUT/gldv2_dataset/train/*/*/*/" \
    --output_directory="$OUT/tfrecord" \
    --num_shards=4 --generate_train_validation_splits --validation_split_size=0.2
fi

stage train "3/9 Train DELG (GeM + ArcFace) with the autoencoder: $TRAIN_STEPS steps at ${IMAGE_SIZE}px"
# Resumes from the last checkpoint if interrupted; the class count comes from
# the dataset_metadata.json written in step 2. Block3 stays at stride 16
# (--noblock3_strides: a 4x4 attention map at 64 px instead of 2x2), the attention loss
# weighs 20x and --deterministic makes the run (and so every number below) repeatable.
# Validation (the 8 held-out images) runs once, at the last step.
"$PY" scripts/train.py \
  --train_file_pattern="$OUT/tfrecord/train*" \
  --validation_file_pattern="$OUT/tfrecord/validation*" \
  --logdir="$OUT/delg_training" \
  --delg_global_features --use_autoencoder --noblock3_strides \
  --attention_loss_weight="$ATTENTION_LOSS_WEIGHT" --deterministic --seed="$SEED" \
  --image_size="$IMAGE_SIZE" --batch_size=8 --max_iters="$TRAIN_STEPS" \
  --initial_lr="$INITIAL_LR" --eval_interval="$TRAIN_STEPS" | tee -a "$OUT/logs/train.log"
echo "TensorBoard logs: $OUT/delg_training/train_logs  (tensorboard --logdir=$OUT/delg_training/train_logs)"

stage export "4/9 Export the local-feature model and the local+global DELG model"
if [ ! -d "$OUT/exports/delf_local" ]; then
  "$PY" scripts/export_local_model.py \
    --ckpt_path="$OUT/delg_training/delf_weights" --export_path="$OUT/exports/delf_local" \
    --noblock3_strides
fi
if [ ! -d "$OUT/exports/delg" ]; then
  "$PY" scripts/export_local_and_global_model.py \
    --ckpt_path="$OUT/delg_training/delf_weights" --export_path="$OUT/exports/delg" \
    --delg_global_features --noblock3_strides
fi

stage features "5/9 DELF local features of two views of the same landmark"
# Two index images of the first landmark, and their ground-truth homography (the
# generator knows each view's geometry) for measuring the matches in step 6.
"$PY" - "$OUT" <<'PYEOF'
import csv, sys, pathlib
from delf.data import view_homographies
out = pathlib.Path(sys.argv[1])
root = out / "gldv2_dataset"
rows = list(csv.DictReader(open(root / "index" / "index_image_to_landmark.csv")))
by_landmark = {}
for row in rows:
  by_landmark.setdefault(row["landmark_id"], []).append(row["id"])
ids = next(v for v in by_landmark.values() if len(v) >= 2)[:2]
paths = [str(root / "index" / i[0] / i[1] / i[2] / f"{i}.jpg") for i in ids]
(out / "list_images.txt").write_text("\n".join(paths) + "\n")
try:
  view_homographies.write_pair_homography(root, ids[0], ids[1], out / "pair_homography.json")
except ValueError as e:  # A dataset made by an older version: match without ground truth.
  (out / "pair_homography.json").unlink(missing_ok=True)
  print(f"No ground-truth homography for the pair: {e}")
PYEOF
sed -e "s|model_path: .*|model_path: \"$OUT/exports/delf_local\"|" \
    -e "s|score_threshold: .*|score_threshold: 0.0|" \
    configs/delf_tf2_config_example.pbtxt > "$OUT/delf_local_config.pbtxt"
"$PY" scripts/extract_features.py --config_path="$OUT/delf_local_config.pbtxt" \
  --list_images_path="$OUT/list_images.txt" --output_dir="$OUT/features"

stage matching "6/9 Match them: KD-tree-equivalent nearest neighbours + affine RANSAC"
IMAGE_1="$(sed -n 1p "$OUT/list_images.txt")"
IMAGE_2="$(sed -n 2p "$OUT/list_images.txt")"
# With the pair's ground-truth homography it also prints how many inliers are correct
# and draws them green, the wrong ones red. Correct = within 16 px of the true position:
# DELF keypoints are receptive-field centres on a grid of 16 px / scale, so a right match
# is off by up to half a cell in each image (README, "Demo results").
GROUND_TRUTH=()
if [ -f "$OUT/pair_homography.json" ]; then
  GROUND_TRUTH=(--homography_path="$OUT/pair_homography.json" --homography_tolerance_px=16)
fi
"$PY" scripts/match_images.py \
  --image_1_path="$IMAGE_1" --image_2_path="$IMAGE_2" \
  --features_1_path="$OUT/features/$(basename "${IMAGE_1%.*}").delf" \
  --features_2_path="$OUT/features/$(basename "${IMAGE_2%.*}").delf" \
  --output_image="$OUT/matched_images.png" ${GROUND_TRUTH[@]+"${GROUND_TRUTH[@]}"} \
  | tee "$OUT/logs/match_images.log"
echo "Picture: $OUT/matched_images.png"

stage attention "Where the attention looks: heatmaps of the matched pair at scales 1 and 2"
# The 60 strongest cells per scale are ringed (extraction keeps up to 1000 over 7 scales).
"$PY" scripts/visualize_attention.py --config_path="$OUT/delf_local_config.pbtxt" \
  --list_images_path="$OUT/list_images.txt" --scales=1.0,2.0 --max_feature_num=60 \
  --output_dir="$OUT/attention"

stage benchmark "7/9 A small Revisited-Oxford-format benchmark (queries with boxes, index, gnd_demo.mat)"
if [ ! -f "$OUT/benchmark/gnd_demo.mat" ]; then
  "$PY" scripts/make_demo_benchmark.py --output_dir="$OUT/benchmark"
fi

stage extraction "8/9 DELG features of the queries (cropped to their box) and of the index"
sed -e "s|model_path: .*|model_path: \"$OUT/exports/delg\"|" \
    configs/delg_demo_config.pbtxt > "$OUT/delg_config.pbtxt"
for SET in query index; do
  "$PY" scripts/extract_delg_features.py --delf_config_path="$OUT/delg_config.pbtxt" \
    --dataset_file_path="$OUT/benchmark/gnd_demo.mat" --images_dir="$OUT/benchmark/images" \
    --image_set="$SET" --output_features_dir="$OUT/benchmark/features/$SET"
done

stage retrieval "9/9 Retrieval: global ranking, then re-ranking by geometric verification"
for GV in nouse_geometric_verification use_geometric_verification; do
  "$PY" scripts/perform_retrieval.py --dataset_file_path="$OUT/benchmark/gnd_demo.mat" \
    --query_features_dir="$OUT/benchmark/features/query" \
    --index_features_dir="$OUT/benchmark/features/index" \
    --"$GV" --output_dir="$OUT/retrieval_$GV"
done
echo
echo "Retrieval metrics, global descriptors only ($OUT/retrieval_nouse_geometric_verification/metrics.txt):"
cat "$OUT/retrieval_nouse_geometric_verification/metrics.txt"
echo
echo "With re-ranking by local features (_after_gv; $OUT/retrieval_use_geometric_verification/metrics.txt):"
cat "$OUT/retrieval_use_geometric_verification/metrics.txt"

stage gldv2 "GLDv2 format: feature stores, a faiss index, Kaggle retrieval and recognition CSVs"
# The demo's index and test splits, as a GLDv2 run would use them (recognition here
# votes among the labelled index images; on GLDv2 it searches the train set).
G="$OUT/gldv2_run"
mkdir -p "$G"
for SET in index test; do
  find "$OUT/gldv2_dataset/$SET" -name '*.jpg' | sort > "$G/${SET}_images.txt"
  "$PY" scripts/extract_delg_features.py --delf_config_path="$OUT/delg_config.pbtxt" \
    --list_images_path="$G/${SET}_images.txt" --output_store="$G/stores/$SET"
done
"$PY" scripts/build_index.py --features_path="$G/stores/index" --index_path="$G/indexes/index"
"$PY" scripts/gldv2_submission.py --task=retrieval --queries_path="$G/stores/test" \
  --index_path="$G/indexes/index" --index_features_path="$G/stores/index" \
  --use_geometric_verification --output_path="$G/retrieval_predictions.csv"
"$PY" scripts/gldv2_submission.py --task=recognition --queries_path="$G/stores/test" \
  --index_path="$G/indexes/index" --index_features_path="$G/stores/index" \
  --labels_path="$OUT/gldv2_dataset/index/index_image_to_landmark.csv" \
  --use_geometric_verification --output_path="$G/recognition_predictions.csv"
echo
echo "GLDv2 retrieval (mAP@100 of $G/retrieval_predictions.csv):"
"$PY" scripts/compute_retrieval_metrics.py \
  --solution_path="$OUT/gldv2_dataset/test/ground_truth/retrieval_solution_v2.1.csv" \
  --predictions_path="$G/retrieval_predictions.csv" | tee "$OUT/logs/gldv2_retrieval_metrics.log"
echo
echo "GLDv2 recognition (GAP of $G/recognition_predictions.csv):"
"$PY" scripts/compute_recognition_metrics.py \
  --solution_path="$OUT/gldv2_dataset/test/ground_truth/recognition_solution_v2.1.csv" \
  --predictions_path="$G/recognition_predictions.csv" | tee "$OUT/logs/gldv2_recognition_metrics.log"
end_stage

"$PY" scripts/summarize_demo.py --demo_dir="$OUT"
