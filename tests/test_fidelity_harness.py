"""The fidelity harness itself (``fidelity/``), without the reference: environments, skip, table.

The suite's checks need the runnable reference and run with ``make fidelity``;
here only what must hold everywhere: the two sides' environments never mix,
the suite skips cleanly where ``../shared/reference`` is absent, and the table
and differences are computed as documented.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fidelity import compare, reference_env


def test_our_environment_carries_nothing_of_the_reference(monkeypatch):
  monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
  monkeypatch.setenv("PYTHONPATH", "/somewhere/models/research/delf")
  monkeypatch.setenv("VIRTUAL_ENV", "/somewhere/venv")
  env = reference_env.ours_env()
  assert "TF_USE_LEGACY_KERAS" not in env and "VIRTUAL_ENV" not in env
  assert env["PYTHONPATH"] == reference_env.REPO_ROOT
  assert env["PATH"] == os.environ["PATH"]


def test_reference_environment_is_its_env_sh_only(tmp_path, monkeypatch):
  monkeypatch.setenv("PYTHONPATH", "/our/repo")
  monkeypatch.setenv("SOMETHING_ELSE", "x")
  (tmp_path / "env.sh").write_text(
    "export TF_USE_LEGACY_KERAS=1\n"
    f"export PYTHONPATH={tmp_path}/models/research/delf:{tmp_path}/models/research\n"
    f"export PY={tmp_path}/venv/bin/python\n"
  )
  ref = reference_env.ReferenceEnvironment(source=str(tmp_path), home=str(tmp_path))
  env = ref.env({"REF_NUM_CLASSES": "8"})
  assert env["TF_USE_LEGACY_KERAS"] == "1"
  assert env["PYTHONPATH"] == f"{tmp_path}/models/research/delf:{tmp_path}/models/research"
  assert "/our/repo" not in env["PYTHONPATH"]
  assert "SOMETHING_ELSE" not in env and env["REF_NUM_CLASSES"] == "8"
  assert ref.delf_script("examples/match_images.py") == os.path.join(
    str(tmp_path), "models", "research", "delf", "delf", "python", "examples", "match_images.py"
  )


def test_reference_commands_never_start_in_the_repository(tmp_path):
  (tmp_path / "env.sh").write_text("export TF_USE_LEGACY_KERAS=1\n")
  ref = reference_env.ReferenceEnvironment(source=str(tmp_path), home=str(tmp_path))
  out = ref.run([sys.executable, "-c", "import os; print(os.getcwd())"]).stdout
  assert out.strip() == str(tmp_path)  # the repo's delf/ would shadow the reference's


def test_failed_command_names_program_status_and_last_line(tmp_path):
  log = str(tmp_path / "x.log")
  with pytest.raises(reference_env.CommandError) as error:
    reference_env.run_ours(
      [sys.executable, "-c", "print('working'); raise SystemExit('broken input')"], log_path=log
    )
  first = str(error.value).splitlines()[0]
  assert "exited with 1" in first and "broken input" in first and log in first
  with open(log) as f:
    assert "working" in f.read()


def test_reference_directory_inside_the_repository_is_refused(monkeypatch, tmp_path):
  (tmp_path / "setup.sh").write_text("")
  monkeypatch.setenv("DELF_REFERENCE_SOURCE", str(tmp_path))
  monkeypatch.setenv("DELF_REFERENCE_DIR", os.path.join(reference_env.REPO_ROOT, "refenv"))
  with pytest.raises(ValueError, match="inside the repository"):
    reference_env.ReferenceEnvironment.locate()


def test_suite_skips_without_the_reference(tmp_path):
  env = reference_env.ours_env({"DELF_REFERENCE_SOURCE": str(tmp_path / "absent")})
  done = subprocess.run(
    [sys.executable, "-m", "fidelity"],
    env=env,
    cwd=reference_env.REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert done.returncode == 0
  assert "SKIPPED" in done.stdout and "not available" in done.stdout


def test_relative_difference_is_against_the_reference_scale():
  reference = np.array([0.0, 1.0, -4.0])
  assert compare.relative_difference(
    reference + np.array([1e-4, 0, 0]), reference
  ) == pytest.approx(2.5e-5)
  assert compare.relative_difference(np.zeros(3), np.zeros(3)) == 0.0
  assert compare.relative_difference(np.ones(2), np.ones(3)) == float("inf")
  value, name = compare.worst(
    {"a": np.ones(2), "b": [2.0, 2.2]}, {"a": np.ones(2), "b": [2.0, 2.0]}
  )
  assert name == "b" and value == pytest.approx(0.1)
  assert compare.worst({"a": 1.0}, {"a": 1.0, "c": 2.0})[0] == float("inf")


def test_table_rows_and_outcomes():
  rows = [
    compare.Row("equal", 0.0, 0.0),
    compare.Row("close", 3e-6, 1e-5, "block3"),
    compare.Row("far", 2e-4, 1e-4),
    compare.Row("shown only", 1.2, None, "by design"),
    compare.failure("broken", "build_image_dataset.py exited with 1"),
  ]
  assert [r.outcome for r in rows] == ["pass", "pass", "FAIL", "info", "FAIL"]
  lines = compare.format_table(rows).splitlines()
  assert lines[0].split()[:4] == ["check", "max", "difference", "tolerance"]
  assert "3.00e-06" in lines[3] and "1.00e-05" in lines[3] and lines[3].rstrip().endswith("block3")
  assert "FAIL" in lines[4] and "info" in lines[5]
