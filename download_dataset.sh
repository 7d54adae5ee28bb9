#!/usr/bin/env bash
# Downloads the Google Landmarks Dataset v2 (GLDv2) into ./gldv2_dataset/.
#
# Usage: bash download_dataset.sh NUM_TRAIN_TARS NUM_INDEX_TARS NUM_TEST_TARS
#   e.g. bash download_dataset.sh 500 100 20      (the whole dataset: up to ~1 TB, ~12 h)
#        bash download_dataset.sh 1 1 1           (a first try: one tar per split)
# Only the TRAIN split (~95 GB for all 500 tars) is needed to train.
#
# Layout: gldv2_dataset/<split>/ holds the split's CSVs and the images, extracted in place
# into folders named by the first three characters of the id (train/a/b/c/abc....jpg).
# Splits are processed in the order train, test, index; 6 tars download at a time.
#
# Differences from the reference script (KB-1): a tar whose MD5 does not match is
# downloaded again (GLDV2_RETRIES attempts in all) and never unpacked; at the end every file
# that still failed is listed and the exit status is 1. Re-running skips CSVs already present
# and tars already verified and extracted (marker files under gldv2_dataset/<split>/.verified/),
# so only missing or failed files are fetched. Before fetching anything the base URL is probed
# once: an unreachable host (refused connection, unknown name, no route, timeout) stops the
# script at once with exit status 1 instead of retrying every file; MD5 mismatches and errors
# of single files are still retried.
#
# Environment:
#   GLDV2_BASE_URL      default https://s3.amazonaws.com/google-landmark
#   GLDV2_OUTPUT_DIR    default gldv2_dataset
#   GLDV2_RETRIES       attempts per file, default 3
#   GLDV2_RETRY_DELAY   seconds between attempts, default 5
#   GLDV2_PARALLEL      simultaneous tar downloads, default 6
#   GLDV2_CONNECT_TIMEOUT  seconds to wait for a connection, default 20

set -uo pipefail

BASE_URL="${GLDV2_BASE_URL:-https://s3.amazonaws.com/google-landmark}"
BASE_URL="${BASE_URL%/}"
OUTPUT_DIR="${GLDV2_OUTPUT_DIR:-gldv2_dataset}"
RETRIES="${GLDV2_RETRIES:-3}"
RETRY_DELAY="${GLDV2_RETRY_DELAY:-5}"
PARALLEL="${GLDV2_PARALLEL:-6}"
CONNECT_TIMEOUT="${GLDV2_CONNECT_TIMEOUT:-20}"

usage() {
  echo "Usage: bash $0 NUM_TRAIN_TARS(0-500) NUM_INDEX_TARS(0-100) NUM_TEST_TARS(0-20)" >&2
  exit 2
}

check_count() {  # name value max
  if ! [[ "$2" =~ ^[0-9]+$ ]] || (( 10#$2 > $3 )); then
    echo "error: $1 must be an integer between 0 and $3, got '$2'" >&2
    usage
  fi
}

[[ $# -eq 3 ]] || usage
check_count NUM_TRAIN_TARS "$1" 500
check_count NUM_INDEX_TARS "$2" 100
check_count NUM_TEST_TARS "$3" 20
NUM_TRAIN=$((10#$1))
NUM_INDEX=$((10#$2))
NUM_TEST=$((10#$3))

if command -v curl >/dev/null 2>&1; then
  fetch() {
    curl --fail --silent --show-error --location --retry 0 --connect-timeout "${CONNECT_TIMEOUT}" \
      -o "$2" "$1"
  }
  # Exit status 0 if the host answers at all (any HTTP status), non-zero if it cannot be reached.
  probe() {
    curl --silent --show-error --head --connect-timeout "${CONNECT_TIMEOUT}" \
      --max-time $(( CONNECT_TIMEOUT * 3 )) -o /dev/null "$1"
  }
elif command -v wget >/dev/null 2>&1; then
  fetch() { wget --quiet --timeout="${CONNECT_TIMEOUT}" -O "$2" "$1"; }
  probe() {  # wget: 4 = network failure, 5 = TLS failure; 8 = an HTTP error (host reachable)
    local status=0
    wget --quiet --spider --tries=1 --timeout="${CONNECT_TIMEOUT}" "$1" || status=$?
    [[ ${status} -ne 4 && ${status} -ne 5 ]]
  }
else
  echo "error: neither curl nor wget is installed" >&2
  exit 2
fi

if command -v md5sum >/dev/null 2>&1; then
  md5_of() { md5sum "$1" | cut -d' ' -f1; }
elif command -v md5 >/dev/null 2>&1; then
  md5_of() { md5 -r "$1" | cut -d' ' -f1; }  # macOS
else
  echo "error: neither md5sum nor md5 is installed" >&2
  exit 2
fi

FAILED_DIR="${OUTPUT_DIR}/.failed"
mkdir -p "${OUTPUT_DIR}" || exit 1
rm -rf "${FAILED_DIR}"
mkdir -p "${FAILED_DIR}" || exit 1

record_failure() {  # relative-name reason
  echo "FAILED: $1: $2" >&2
  echo "$1: $2" > "${FAILED_DIR}/$(echo "$1" | tr '/' '_')"
}

# Downloads URL to DEST atomically (temporary file, then rename), with retries.
download_file() {  # url dest
  local url="$1" dest="$2" attempt
  mkdir -p "$(dirname "${dest}")"
  for (( attempt = 1; attempt <= RETRIES; attempt++ )); do
    if fetch "${url}" "${dest}.part"; then
      mv -f "${dest}.part" "${dest}"
      return 0
    fi
    rm -f "${dest}.part"
    echo "Download of ${url} failed (attempt ${attempt}/${RETRIES})" >&2
    (( attempt < RETRIES )) && sleep "${RETRY_DELAY}"
  done
  return 1
}

download_csv() {  # split url-path local-name
  local split="$1" url_path="$2" name="$3"
  local dest="${OUTPUT_DIR}/${split}/${name}"
  if [[ -s "${dest}" ]]; then
    echo "Already present: ${dest}"
    return 0
  fi
  if download_file "${BASE_URL}/${url_path}" "${dest}"; then
    echo "Downloaded ${dest}"
  else
    record_failure "${split}/${name}" "download failed after ${RETRIES} attempts"
  fi
}

# Downloads, verifies and extracts one tar; never extracts a tar with a wrong MD5.
download_tar() {  # split index
  local split="$1" index
  index="$(printf '%03d' "$2")"
  local name="images_${index}.tar"
  local split_dir="${OUTPUT_DIR}/${split}"
  local marker="${split_dir}/.verified/${name}.ok"
  local tar_path="${split_dir}/${name}"
  local md5_path="${split_dir}/md5sum/md5.${name%.tar}.txt"
  if [[ -f "${marker}" ]]; then
    echo "Already verified and extracted: ${split}/${name}"
    return 0
  fi
  local attempt expected actual reason=""
  for (( attempt = 1; attempt <= RETRIES; attempt++ )); do
    if ! download_file "${BASE_URL}/md5sum/${split}/md5.${name%.tar}.txt" "${md5_path}"; then
      reason="MD5 file download failed"
      break
    fi
    expected="$(cut -d' ' -f1 < "${md5_path}" | tr -d '[:space:]' | tr 'A-F' 'a-f')"
    if ! download_file "${BASE_URL}/${split}/${name}" "${tar_path}"; then
      reason="download failed after ${RETRIES} attempts"
      break
    fi
    actual="$(md5_of "${tar_path}")"
    if [[ -n "${expected}" && "${actual}" == "${expected}" ]]; then
      reason=""
      break
    fi
    reason="MD5 mismatch (expected ${expected:-<empty>}, got ${actual})"
    echo "${split}/${name}: ${reason} (attempt ${attempt}/${RETRIES})" >&2
    rm -f "${tar_path}"
    (( attempt < RETRIES )) && sleep "${RETRY_DELAY}"
  done
  if [[ -n "${reason}" ]]; then
    rm -f "${tar_path}"
    record_failure "${split}/${name}" "${reason}; not extracted"
    return 1
  fi
  if ! tar -xf "${tar_path}" -C "${split_dir}"; then
    record_failure "${split}/${name}" "extraction failed"
    return 1
  fi
  mkdir -p "$(dirname "${marker}")"
  echo "${expected}" > "${marker}"
  echo "Verified and extracted ${split}/${name}"
}

download_split() {  # split num_tars csv...
  local split="$1" num_tars="$2"
  shift 2
  mkdir -p "${OUTPUT_DIR}/${split}"
  local spec
  for spec in "$@"; do  # "url-path|local-name"
    download_csv "${split}" "${spec%%|*}" "${spec##*|}"
  done
  local i
  for (( i = 0; i < num_tars; i++ )); do
    download_tar "${split}" "${i}" &
    while (( $(jobs -rp | wc -l) >= PARALLEL )); do
      if (( BASH_VERSINFO[0] > 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] >= 3) )); then
        wait -n 2>/dev/null || true
      else
        wait  # bash < 4.3 (macOS): finish the whole batch, as the reference did
      fi
    done
  done
  wait
}

# True if some requested file is not there yet (then the network is needed).
needs_download() {
  local split num_tars name i
  for split in train test index; do
    case "${split}" in
      train) num_tars=${NUM_TRAIN}
        set -- train.csv train_clean.csv train_attribution.csv train_label_to_category.csv ;;
      test) num_tars=${NUM_TEST}
        set -- test.csv ground_truth/recognition_solution_v2.1.csv \
          ground_truth/retrieval_solution_v2.1.csv ;;
      index) num_tars=${NUM_INDEX}
        set -- index.csv index_image_to_landmark.csv index_label_to_category.csv ;;
    esac
    for name in "$@"; do
      [[ -s "${OUTPUT_DIR}/${split}/${name}" ]] || return 0
    done
    for (( i = 0; i < num_tars; i++ )); do
      [[ -f "${OUTPUT_DIR}/${split}/.verified/images_$(printf '%03d' "${i}").tar.ok" ]] || return 0
    done
  done
  return 1
}

if needs_download; then
  if ! probe_error="$(probe "${BASE_URL}/" 2>&1)"; then
    echo "error: cannot reach ${BASE_URL}/ (${probe_error:-no answer}); nothing was downloaded." >&2
    echo "Check the network connection, or set GLDV2_BASE_URL to a reachable mirror." >&2
    exit 1
  fi
fi

download_split train "${NUM_TRAIN}" \
  "metadata/train.csv|train.csv" \
  "metadata/train_clean.csv|train_clean.csv" \
  "metadata/train_attribution.csv|train_attribution.csv" \
  "metadata/train_label_to_category.csv|train_label_to_category.csv"
download_split test "${NUM_TEST}" \
  "metadata/test.csv|test.csv" \
  "ground_truth/recognition_solution_v2.1.csv|ground_truth/recognition_solution_v2.1.csv" \
  "ground_truth/retrieval_solution_v2.1.csv|ground_truth/retrieval_solution_v2.1.csv"
download_split index "${NUM_INDEX}" \
  "metadata/index.csv|index.csv" \
  "metadata/index_image_to_landmark.csv|index_image_to_landmark.csv" \
  "metadata/index_label_to_category.csv|index_label_to_category.csv"

failures=("${FAILED_DIR}"/*)
if [[ -e "${failures[0]}" ]]; then
  echo "" >&2
  echo "ERROR: ${#failures[@]} file(s) failed; re-run the same command to retry only these:" >&2
  for f in "${failures[@]}"; do
    echo "  $(cat "${f}")" >&2
  done
  exit 1
fi
rm -rf "${FAILED_DIR}"
echo "All requested GLDv2 files are downloaded, verified and extracted in ${OUTPUT_DIR}/."
