"""The demo's closing summary (delf.demo_summary, scripts/summarize_demo.py) on step outputs
written the way demo.sh's steps write them: figures parsed exactly, ``n/a`` where a step is
missing."""

from __future__ import annotations

from delf import demo_summary
from delf.retrieval.metrics_file import SaveMetricsFile
from tests import cli_harness

TRAIN_LOG = """\
Deterministic run: seed 0, TensorFlow op determinism on
num_classes = 8 (from dataset_metadata.json next to out/tfrecord/train*)
step 500/600: loss desc 1.5266 attn 0.5903 recon 1.0057 | train accuracy desc 0.608 attn \
0.764 | lr 0.003367 | 38.39 images/s | elapsed 1m49s, ETA 21s
step 600/600: loss desc 0.9000 attn 0.4100 recon 0.9500 | train accuracy desc 0.700 attn \
0.810 | lr 0.000033 | 38.40 images/s | elapsed 2m10s, ETA 0s
validation at step 600: 8 images in 1 batches (one pass over the validation split)
validation at step 600 (8 images): accuracy desc 0.6250 attn 0.8750, loss desc 1.2000 attn 0.5000
Finished training
"""

RETRIEVAL_SOLUTION = [
  "id,images,Usage",
  "0123456789abcdef,fedcba9876543210 fedcba9876543220,Public",
  "0223456789abcdef,fedcba9876543210,Public",
  "0623456789abcdef,aaaa bbbb,Private",
]
RETRIEVAL_PREDICTIONS = [
  "id,images",
  "0123456789abcdef,fedcba9876543210 fedcba9876543220",
  "0223456789abcdef,fedcba9876543200 fedcba9876543210",
  "0623456789abcdef,cccc bbbb aaaa",
]


def _write(path, text: str):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def _metrics(path, medium: float, hard: float, after_gv: tuple[float, float] | None = None):
  """A perform_retrieval metrics.txt; ``after_gv`` adds the re-ranked protocols."""
  path.parent.mkdir(parents=True, exist_ok=True)
  maps = {"easy": 1.0, "hard": hard, "medium": medium}
  if after_gv:
    maps.update({"medium_after_gv": after_gv[0], "hard_after_gv": after_gv[1]})
  precisions = {k: [1.0, 0.5] for k in maps}
  SaveMetricsFile(maps, precisions, precisions, [1, 5], str(path))


def _gldv2_report(tmp_path, capsys) -> str:
  """The real compute_retrieval_metrics output (Public mAP@100 0.75, Private 0.583333)."""
  solution = _write(tmp_path / "gt" / "solution.csv", "\n".join(RETRIEVAL_SOLUTION) + "\n")
  predictions = _write(tmp_path / "gt" / "pred.csv", "\n".join(RETRIEVAL_PREDICTIONS) + "\n")
  capsys.readouterr()
  cli_harness.run_script(
    "compute_retrieval_metrics",
    [f"--solution_path={solution}", f"--predictions_path={predictions}"],
  )
  return capsys.readouterr().out


def test_parsers_read_the_printed_lines():
  figures = demo_summary.parse_training_log(TRAIN_LOG)
  assert (figures.step, figures.max_iters) == (600, 600)  # the last progress line wins
  assert (figures.desc_loss, figures.attn_loss, figures.recon_loss) == (0.9, 0.41, 0.95)
  assert (figures.train_desc_accuracy, figures.train_attn_accuracy) == (0.7, 0.81)
  assert (figures.validation_step, figures.validation_images) == (600, 8)
  assert figures.validation_desc_accuracy == 0.625 and figures.validation_attn_accuracy == 0.875

  plain = demo_summary.parse_match_log("Loaded image 1's 300 features\nFound 56 inliers\n")
  assert plain.inliers == 56 and plain.correct_inliers is None
  checked = demo_summary.parse_match_log(
    "Found 56 inliers; 52 (92.9 %) within 10 px of the ground-truth homography\n"
  )
  assert (checked.inliers, checked.correct_inliers) == (56, 52)
  assert (checked.correct_percent, checked.tolerance_px) == (92.9, 10.0)

  assert demo_summary.parse_training_log("no progress yet\n") == demo_summary.TrainingFigures()


def test_gldv2_report_parsed_from_the_real_script(tmp_path, capsys):
  values = demo_summary.parse_gldv2_report(_gldv2_report(tmp_path, capsys))
  # Public: both queries fully right at ranks 1-2 / hit at rank 2 -> (1 + 1/2) / 2.
  assert values == {"Public": 0.75, "Private": 0.583333}


def test_summary_of_a_complete_demo_folder(tmp_path, capsys):
  demo = tmp_path / "demo"
  timings = "".join(
    f"{key}\t{seconds}\n"
    for key, seconds in zip(
      [k for k, _ in demo_summary.STAGES], [2.0, 4.5, 150.0, 40.0, 10, 3, 8.5, 2, 30, 5, 60]
    )
  )
  _write(demo / "logs" / "timings.tsv", timings + "train\t10.0\n")  # a resumed stage adds up
  _write(demo / "logs" / "train.log", TRAIN_LOG)
  _write(
    demo / "logs" / "match_images.log",
    "Found 40 inliers; 36 (90 %) within 10 px of the ground-truth homography\n",
  )
  _write(demo / "logs" / "gldv2_retrieval_metrics.log", _gldv2_report(tmp_path, capsys))
  _write(
    demo / "logs" / "gldv2_recognition_metrics.log",
    "(Public)  Global Average Precision: 0.900000\n(Private) Global Average Precision: nan\n",
  )
  _write(
    demo / "tfrecord" / "dataset_metadata.json",
    '{"num_classes": 8, "num_shards": 4, "num_examples": {"train": 56, "validation": 8}}',
  )
  for i in range(3):
    _write(demo / "gldv2_dataset" / "train" / "0" / "1" / "2" / f"{i}.jpg", "")
  _write(demo / "gldv2_dataset" / "train" / "train_clean.csv", "landmark_id,images\n5,a b\n")
  _metrics(demo / "retrieval_nouse_geometric_verification" / "metrics.txt", 0.7512, 0.5)
  _metrics(demo / "retrieval_use_geometric_verification" / "metrics.txt", 0.7512, 0.5, (0.98, 0.9))
  (demo / "exports" / "delg").mkdir(parents=True)
  _write(demo / "matched_images.png", "png")
  _write(demo / "attention_pair.png", "png")

  summary = demo_summary.collect(str(demo))
  assert summary.timings["train"] == 160.0 and summary.total_seconds == 325.0
  assert summary.images == {"train": 3, "index": 0, "test": 0} and summary.clean_images == 2
  assert summary.retrieval["global"]["medium"] == 75.12
  assert summary.retrieval["after_gv"] == {"hard": 90.0, "medium": 98.0}
  assert summary.gldv2["recognition"]["Public"] == 0.9
  assert summary.exports == ["delg"]
  files = dict(summary.files)
  assert files["matched images"] == str(demo / "matched_images.png")
  assert files["attention picture"] == str(demo / "attention_pair.png")
  assert files["Kaggle retrieval CSV"] == "n/a"

  text = demo_summary.format_summary(summary)
  lines = text.splitlines()
  assert lines[0] == "Summary"
  assert lines[1].split() == ["stage", "time", "key", "figure"]
  row = {line.split()[0]: line for line in lines[2:14]}
  assert "160 s" in row["train"] and "600 steps" in row["train"]
  assert "validation accuracy attention 0.875, descriptor 0.625" in row["train"]
  assert "40 inliers, 36 (90 %) within 10 px" in row["matching"]
  assert row["dataset"].endswith(
    "3 train images (2 of 8 landmarks in train_clean.csv), 0 index, 0 test"
  )
  assert "mAP medium/hard 75.12/50.00, re-ranked 98.00/90.00" in row["retrieval"]
  assert "mAP@100 0.7500 (public) 0.5833 (private); GAP 0.9000 n/a" in text
  assert "5 min 25 s" in row["total"]
  assert row["attention"].split()[2:] == ["8", "s", "1", "picture"]
  assert (
    "Attention accuracy: 0.875 on the 8 held-out validation images at step 600 "
    "(train: 0.810 over the last report interval)" in lines
  )


def test_missing_steps_read_na_and_the_script_prints_them(tmp_path, capsys):
  demo = tmp_path / "demo"
  _write(demo / "logs" / "train.log", TRAIN_LOG)
  _write(demo / "logs" / "match_images.log", "Found 12 inliers\n")
  capsys.readouterr()
  assert cli_harness.run_script("summarize_demo", [f"--demo_dir={demo}"]) == 0
  out = capsys.readouterr().out
  table, _, rest = out.strip("\n").partition("\n\n")
  row = {line.split()[0]: line for line in table.splitlines()[2:]}
  assert "12 inliers, correct: n/a" in row["matching"]
  assert "mAP medium/hard n/a/n/a, re-ranked n/a/n/a" in row["retrieval"]
  assert row["train"].split()[1] == "n/a"  # no timings file
  files = {line.split("  ")[1]: line.split()[-1] for line in rest.splitlines() if line[:2] == "  "}
  assert files["attention picture"] == "n/a" and files["matched images"] == "n/a"
  assert row["attention"].split()[-2:] == ["n/a", "n/a"]
  assert "Attention accuracy: 0.875 on the 8 held-out validation images" in out

  assert cli_harness.run_script("summarize_demo", [f"--demo_dir={tmp_path / 'absent'}"]) == 1


def test_global_map_read_from_the_re_ranked_file_alone(tmp_path):
  demo = tmp_path / "demo"
  _metrics(demo / "retrieval_use_geometric_verification" / "metrics.txt", 0.7, 0.4, (0.95, 0.8))
  summary = demo_summary.collect(str(demo))
  assert summary.retrieval == {
    "global": {"easy": 100.0, "hard": 40.0, "medium": 70.0},
    "after_gv": {"hard": 80.0, "medium": 95.0},
  }
