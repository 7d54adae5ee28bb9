#!/usr/bin/env bash
# The GPU benchmark suite (bench/gpu_suite.py): one table of training, extraction and
# exact-search throughput. On a GPU machine: `bash bench/gpu_suite.sh` (~8 minutes).
# Anywhere: `bash bench/gpu_suite.sh --tiny` (tiny models; the test suite runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$PY" -m bench.gpu_suite "$@"
