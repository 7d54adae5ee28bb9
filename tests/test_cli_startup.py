"""How the scripts start: --help, the working folder, TensorFlow's start-up noise, flag errors.

Issue 8: `--help` exited with status 1; `python -m scripts.X` only works from the repository
root (help and README say so, `python scripts/X.py` works anywhere); TensorFlow's C++
start-up lines (oneDNN, CUDA, cuInit) filled every script's output; `--verbosity` brings them
back.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from delf import cli_flags, tf_startup
from tests.conftest import REPO_ROOT


def _env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env.update(extra)
  return env


def _run(args, cwd, **env):
  return subprocess.run(
    [sys.executable, *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=120
  )


@pytest.mark.parametrize("flag", ["--help", "-?", "--helpfull"])
def test_help_exits_with_status_zero_from_any_folder(tmp_path, flag):
  proc = _run([str(REPO_ROOT / "scripts" / "match_images.py"), flag], cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert "--features_1_path" in proc.stdout
  assert "python -m scripts.match_images` from the repository root" in proc.stdout


def test_module_form_from_the_repository_root_and_errors_keep_status_one(tmp_path):
  proc = _run(["-m", "scripts.compute_retrieval_metrics", "--help"], cwd=REPO_ROOT)
  assert proc.returncode == 0 and "--solution_path" in proc.stdout
  bad = _run([str(REPO_ROOT / "scripts" / "match_images.py"), "--no_such_flag"], cwd=tmp_path)
  assert bad.returncode == 1 and "no_such_flag" in bad.stderr


def test_help_detection_stops_at_double_dash():
  assert cli_flags._help_requested(["x", "--a=1", "--help"])
  assert cli_flags._help_requested(["x", "-?"])
  assert not cli_flags._help_requested(["x", "--", "--help"])
  assert not cli_flags._help_requested(["x", "--helper=3"])
  assert not cli_flags._help_requested(["x", "-h"])  # not an absl flag: an error, status 1


def test_tensorflow_startup_lines_are_hidden_by_default_and_shown_with_verbosity(tmp_path):
  code = (
    "import sys; from delf import tf_startup; tf_startup.configure(int(sys.argv[1])); "
    "tf = tf_startup.import_tensorflow(); print(tf.reduce_sum(tf.ones([2])).numpy())"
  )
  quiet = _run(["-c", code, "-1"], cwd=REPO_ROOT)
  assert quiet.returncode == 0 and quiet.stdout.strip() == "2.0"
  assert quiet.stderr.strip() == "", quiet.stderr
  verbose = _run(["-c", code, "0"], cwd=REPO_ROOT)
  assert verbose.returncode == 0
  noise = [line for line in verbose.stderr.splitlines() if tf_startup.is_noise(line)]
  if not noise:
    pytest.skip("this TensorFlow build prints no start-up notices on this machine")
  # The user's own setting is respected too.
  own = _run(["-c", code, "-1"], cwd=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="0")
  assert [line for line in own.stderr.splitlines() if tf_startup.is_noise(line)]


def test_other_lines_written_during_the_import_are_kept():
  code = (
    "import os; from delf import tf_startup\n"
    "with tf_startup._stderr_filtered():\n"
    "  os.write(2, b'I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\\n')\n"
    "  os.write(2, b'a real problem\\n')\n"
  )
  proc = _run(["-c", code], cwd=REPO_ROOT)
  assert proc.returncode == 0
  assert proc.stderr.splitlines() == ["a real problem"]


def test_a_tensorflow_script_error_is_one_line(tmp_path):
  proc = _run(
    [
      str(REPO_ROOT / "scripts" / "export_local_model.py"),
      f"--ckpt_path={tmp_path}/none/delf_weights",
      f"--export_path={tmp_path}/export",
    ],
    cwd=tmp_path,
  )
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("export_local_model: error: checkpoint")


def test_block_counts_flag_error_names_the_flag():
  from absl import flags

  from tests.cli_harness import load_script

  load_script("train")
  with pytest.raises(flags.IllegalFlagValueError, match=r"--backbone_block_counts.*4 positive"):
    flags.FLAGS(["train.py", "--backbone_block_counts=a,b"])
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["train.py", "--backbone_block_counts=1,1,2,1"])
  assert flags.FLAGS.backbone_block_counts == ["1", "1", "2", "1"]
  flags.FLAGS.unparse_flags()


def test_every_script_starts_through_cli_flags_run():
  # `--help` exits 0 and TensorFlow's start-up lines stay hidden only for scripts that
  # start through cli_flags.run; a new script calling app.run directly would regress both.
  scripts = sorted(p for p in (REPO_ROOT / "scripts").glob("*.py") if p.name != "__init__.py")
  assert len(scripts) >= 19
  plain = [p.name for p in scripts if "cli_flags.run(main" not in p.read_text()]
  assert plain == []
