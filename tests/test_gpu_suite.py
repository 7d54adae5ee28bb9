"""bench/gpu_suite.sh runs (tiny settings, CPU) and prints its whole table (issue 12).

The suite is meant for a GPU machine; running it here with tiny models keeps every row's
code path alive between the rare runs on a GPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_gpu_suite_tiny_prints_every_row():
  env = dict(os.environ, PY=sys.executable, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
    ["bash", str(REPO_ROOT / "bench" / "gpu_suite.sh"), "--tiny"],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO_ROOT,
    timeout=900,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [
    line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line
  ]
  table = {tuple(cell.strip() for cell in row.strip("|").split("|")[:2]): row for row in rows[1:]}
  for model in ("DELF", "DELG"):
    for mode in ("float32", "mixed bf16", "XLA"):
      row = table[("training", f"{model} 64 px {mode}")]
      assert re.search(r"\| \d+\.\d images/s \| batch 2, 10 classes \|", row), row
  for precision in ("float32", "float16", "bfloat16"):
    for suffix in ("", ", batch 2"):
      row = table[("extraction", f"DELF 2-scale 96x128 {precision}{suffix}")]
      assert re.search(r"\| \d+\.\d\d images/s \|", row), row
  search = [row for key, row in table.items() if key[0] == "search"]
  assert len(search) == 1
  assert "faiss not installed" in search[0] or re.search(r"\d+ queries/s", search[0])
