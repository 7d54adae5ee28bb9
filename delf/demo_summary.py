"""The closing summary of ``demo.sh``: one line per stage (time, key figure) and the files to open.

Everything is read back from what the demo's steps wrote into its output folder,
so the summary can be printed again at any time (``scripts/summarize_demo.py``):

* ``logs/timings.tsv``: ``stage<TAB>seconds`` per stage, written by demo.sh;
* ``logs/train.log``: train.py's output (progress lines and the final validation);
* ``logs/match_images.log``: match_images.py's output (inliers, and the share of them
  that agrees with the ground-truth homography when the demo passes one);
* ``logs/gldv2_*_metrics.log``: the GLDv2 metric reports;
* ``tfrecord/dataset_metadata.json``, the ``metrics.txt`` files, the exports.

A figure whose source is missing (a step that did not run, or an older demo that
printed no such line) reads ``n/a``; the summary never fails because of it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re

NA = "n/a"

# Stage keys written by demo.sh, in order, with the names the table shows.
STAGES = (
  ("dataset", "dataset"),
  ("build", "TFRecords"),
  ("train", "train"),
  ("export", "export"),
  ("features", "DELF features"),
  ("matching", "matching"),
  ("attention", "attention maps"),
  ("benchmark", "benchmark"),
  ("extraction", "DELG features"),
  ("retrieval", "retrieval"),
  ("gldv2", "GLDv2 format"),
)

_FLOAT = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan)"
_TRAIN_STEP = re.compile(
  rf"^step (\d+)/(\d+): loss desc {_FLOAT} attn {_FLOAT} recon {_FLOAT} \| train accuracy "
  rf"desc {_FLOAT} attn {_FLOAT}"
)
_VALIDATION = re.compile(
  rf"^validation at step (\d+) \((\d+) images\): accuracy desc {_FLOAT} attn {_FLOAT}"
)
_INLIERS = re.compile(r"^Found (\d+) inliers")
_CORRECT_INLIERS = re.compile(
  rf"^Found (\d+) inliers; (\d+) \({_FLOAT} ?%\) within {_FLOAT} px of the ground-truth homography"
)
_GLDV2_VALUE = re.compile(
  rf"^\((Public|Private)\)\s+(Mean Average Precision|Global Average Precision): {_FLOAT}"
)


@dataclasses.dataclass
class TrainingFigures:
  """The last progress line and the last validation of a train.py log."""

  step: int | None = None
  max_iters: int | None = None
  desc_loss: float | None = None
  attn_loss: float | None = None
  recon_loss: float | None = None
  train_desc_accuracy: float | None = None
  train_attn_accuracy: float | None = None
  validation_step: int | None = None
  validation_images: int | None = None
  validation_desc_accuracy: float | None = None
  validation_attn_accuracy: float | None = None


@dataclasses.dataclass
class MatchFigures:
  inliers: int | None = None
  correct_inliers: int | None = None
  correct_percent: float | None = None
  tolerance_px: float | None = None


@dataclasses.dataclass
class DemoSummary:
  """Everything the table shows (None: not available)."""

  timings: dict[str, float]
  images: dict[str, int]
  clean_images: int | None  # listed in train_clean.csv (what the TFRecords hold)
  num_classes: int | None
  examples: dict[str, int]
  num_shards: int | None
  training: TrainingFigures
  exports: list[str]
  local_feature_files: int
  match: MatchFigures
  benchmark_images: int
  benchmark_feature_files: dict[str, int]
  retrieval: dict[str, dict[str, float]]  # "global"/"after_gv" -> protocol -> mAP (%)
  gldv2: dict[str, dict[str, float]]  # "retrieval"/"recognition" -> Public/Private -> value
  files: list[tuple[str, str]]  # (description, path or NA)
  attention_pictures: list[str] = dataclasses.field(default_factory=list)

  @property
  def total_seconds(self) -> float | None:
    return sum(self.timings.values()) if self.timings else None


def _read(path: str) -> str | None:
  try:
    with open(path, encoding="utf8", errors="replace") as f:
      return f.read()
  except OSError:
    return None


def read_timings(path: str) -> dict[str, float]:
  """``stage<TAB>seconds`` lines; a stage listed twice (a resumed run) is summed."""
  timings: dict[str, float] = {}
  for line in (_read(path) or "").splitlines():
    parts = line.split("\t")
    if len(parts) != 2:
      continue
    try:
      seconds = float(parts[1])
    except ValueError:
      continue
    timings[parts[0]] = timings.get(parts[0], 0.0) + seconds
  return timings


def parse_training_log(text: str) -> TrainingFigures:
  """The last ``step N/M: ...`` line and the last validation line of train.py's output."""
  figures = TrainingFigures()
  for line in text.splitlines():
    line = line.strip()
    if match := _TRAIN_STEP.match(line):
      g = match.groups()
      figures.step, figures.max_iters = int(g[0]), int(g[1])
      (
        figures.desc_loss,
        figures.attn_loss,
        figures.recon_loss,
        figures.train_desc_accuracy,
        figures.train_attn_accuracy,
      ) = (float(v) for v in g[2:])
    elif match := _VALIDATION.match(line):
      g = match.groups()
      figures.validation_step, figures.validation_images = int(g[0]), int(g[1])
      figures.validation_desc_accuracy, figures.validation_attn_accuracy = float(g[2]), float(g[3])
  return figures


def parse_match_log(text: str) -> MatchFigures:
  """``Found N inliers`` and, when present, the ground-truth check of match_images.py."""
  figures = MatchFigures()
  for line in text.splitlines():
    line = line.strip()
    if match := _CORRECT_INLIERS.match(line):
      figures.inliers, figures.correct_inliers = int(match.group(1)), int(match.group(2))
      figures.correct_percent, figures.tolerance_px = float(match.group(3)), float(match.group(4))
    elif match := _INLIERS.match(line):
      figures.inliers = int(match.group(1))
  return figures


def parse_gldv2_report(text: str) -> dict[str, float]:
  """``Public``/``Private`` -> mAP@100 or GAP from a compute_*_metrics report."""
  values = {}
  for line in text.splitlines():
    if match := _GLDV2_VALUE.match(line.strip()):
      values[match.group(1)] = float(match.group(3))
  return values


def _read_metrics(path: str) -> dict[str, float]:
  """Protocol -> mAP in percent from a perform_retrieval metrics.txt ({} if absent/unreadable)."""
  if not os.path.isfile(path):
    return {}
  from delf.retrieval.metrics_file import ReadMetricsFile

  try:
    average_precisions = ReadMetricsFile(path)[0]
  except (OSError, ValueError):
    return {}
  return {key: 100.0 * float(value) for key, value in average_precisions.items()}


def _retrieval_figures(global_only: dict, with_gv: dict) -> dict[str, dict[str, float]]:
  """``global``/``after_gv`` -> protocol -> mAP; the re-ranked run's file holds both the
  global (``medium``) and the re-ranked (``medium_after_gv``) values."""
  after_gv = {k[: -len("_after_gv")]: v for k, v in with_gv.items() if k.endswith("_after_gv")}
  global_ = global_only or {k: v for k, v in with_gv.items() if not k.endswith("_after_gv")}
  return {"global": global_, "after_gv": after_gv}


def _count_clean_images(path: str) -> int | None:
  """Image ids listed in a ``landmark_id,images`` CSV (None if absent)."""
  text = _read(path)
  if text is None:
    return None
  rows = text.splitlines()[1:]
  return sum(len(row.partition(",")[2].split()) for row in rows)


def _count(pattern: str) -> int:
  return len(glob.glob(pattern))


def collect(demo_dir: str) -> DemoSummary:
  """Reads the figures of a demo output folder (see the module docstring)."""

  def path(*parts: str) -> str:
    return os.path.join(demo_dir, *parts)

  metadata = {}
  text = _read(path("tfrecord", "dataset_metadata.json"))
  if text:
    try:
      metadata = json.loads(text)
    except json.JSONDecodeError:
      metadata = {}
  images = {
    split: _count(path("gldv2_dataset", split, "*", "*", "*", "*.jpg"))
    for split in ("train", "index", "test")
  }
  examples = metadata.get("num_examples") if isinstance(metadata.get("num_examples"), dict) else {}
  attention_pictures = sorted(
    set(glob.glob(path("*attention*.png")) + glob.glob(path("attention*", "*.png")))
  )
  gldv2_dir = path("gldv2_run")
  candidates = [
    ("matched images", path("matched_images.png")),
    *(("attention picture", p) for p in attention_pictures),
    ("retrieval metrics (global)", path("retrieval_nouse_geometric_verification", "metrics.txt")),
    ("retrieval metrics (re-ranked)", path("retrieval_use_geometric_verification", "metrics.txt")),
    ("Kaggle retrieval CSV", os.path.join(gldv2_dir, "retrieval_predictions.csv")),
    ("Kaggle recognition CSV", os.path.join(gldv2_dir, "recognition_predictions.csv")),
    ("TensorBoard logdir", path("delg_training", "train_logs")),
    ("step logs", path("logs")),
  ]
  files = [(what, p if os.path.exists(p) else NA) for what, p in candidates]
  if not attention_pictures:
    files.insert(1, ("attention picture", NA))
  return DemoSummary(
    timings=read_timings(path("logs", "timings.tsv")),
    images=images,
    clean_images=_count_clean_images(path("gldv2_dataset", "train", "train_clean.csv")),
    num_classes=metadata.get("num_classes"),
    examples={k: int(v) for k, v in examples.items()},
    num_shards=metadata.get("num_shards"),
    training=parse_training_log(_read(path("logs", "train.log")) or ""),
    exports=[name for name in ("delf_local", "delg") if os.path.isdir(path("exports", name))],
    local_feature_files=_count(path("features", "*.delf")),
    match=parse_match_log(_read(path("logs", "match_images.log")) or ""),
    benchmark_images=_count(path("benchmark", "images", "*.jpg")),
    benchmark_feature_files={
      s: _count(path("benchmark", "features", s, "*.delg_local")) for s in ("query", "index")
    },
    retrieval=_retrieval_figures(
      _read_metrics(path("retrieval_nouse_geometric_verification", "metrics.txt")),
      _read_metrics(path("retrieval_use_geometric_verification", "metrics.txt")),
    ),
    gldv2={
      "retrieval": parse_gldv2_report(_read(path("logs", "gldv2_retrieval_metrics.log")) or ""),
      "recognition": parse_gldv2_report(_read(path("logs", "gldv2_recognition_metrics.log")) or ""),
    },
    files=files,
    attention_pictures=attention_pictures,
  )


def _num(value, fmt: str = "{:.3f}") -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return NA
  return fmt.format(value)


def attention_accuracy_line(training: TrainingFigures) -> str:
  """The headline: attention accuracy on the held-out images (and on the last train steps)."""
  if training.validation_attn_accuracy is not None:
    line = (
      f"Attention accuracy: {training.validation_attn_accuracy:.3f} on the "
      f"{training.validation_images} held-out validation images at step {training.validation_step}"
    )
  else:
    line = f"Attention accuracy: {NA} on the validation images"
  return line + f" (train: {_num(training.train_attn_accuracy)} over the last report interval)"


def _key_figures(s: DemoSummary) -> dict[str, str]:
  t, m = s.training, s.match
  ex = s.examples
  figures = {
    "dataset": (
      f"{s.images['train']} train images ({_num(s.clean_images, '{}')} of "
      f"{_num(s.num_classes, '{}')} landmarks in train_clean.csv), {s.images['index']} index, "
      f"{s.images['test']} test"
    ),
    "build": (
      f"{_num(s.num_shards, '{}')} shards per split: {_num(ex.get('train'), '{}')} train, "
      f"{_num(ex.get('validation'), '{}')} validation examples"
    ),
    "train": (
      f"{_num(t.step, '{}')} steps; final loss desc {_num(t.desc_loss)} attn {_num(t.attn_loss)} "
      f"recon {_num(t.recon_loss)}; validation accuracy attention "
      f"{_num(t.validation_attn_accuracy)}, descriptor {_num(t.validation_desc_accuracy)}"
    ),
    "export": ", ".join(s.exports) if s.exports else NA,
    "features": f"{s.local_feature_files} images",
    "matching": (
      f"{_num(m.inliers, '{}')} inliers, "
      + (
        f"{m.correct_inliers} ({m.correct_percent:g} %) within {m.tolerance_px:g} px of the "
        "true homography"
        if m.correct_inliers is not None
        else f"correct: {NA}"
      )
    ),
    "attention": (
      f"{len(s.attention_pictures)} picture{'' if len(s.attention_pictures) == 1 else 's'}"
      if s.attention_pictures
      else NA
    ),
    "benchmark": f"{s.benchmark_images} images",
    "extraction": (
      f"{s.benchmark_feature_files['query']} queries, {s.benchmark_feature_files['index']} index"
    ),
    "retrieval": (
      f"mAP medium/hard {_num(s.retrieval['global'].get('medium'), '{:.2f}')}/"
      f"{_num(s.retrieval['global'].get('hard'), '{:.2f}')}, re-ranked "
      f"{_num(s.retrieval['after_gv'].get('medium'), '{:.2f}')}/"
      f"{_num(s.retrieval['after_gv'].get('hard'), '{:.2f}')}"
    ),
    "gldv2": (
      f"mAP@100 {_num(s.gldv2['retrieval'].get('Public'), '{:.4f}')} (public) "
      f"{_num(s.gldv2['retrieval'].get('Private'), '{:.4f}')} (private); GAP "
      f"{_num(s.gldv2['recognition'].get('Public'), '{:.4f}')} "
      f"{_num(s.gldv2['recognition'].get('Private'), '{:.4f}')}"
    ),
  }
  return figures


def format_summary(summary: DemoSummary) -> str:
  """The table demo.sh prints last."""
  figures = _key_figures(summary)
  rows = [("stage", "time", "key figure")]
  for key, name in STAGES:
    seconds = summary.timings.get(key)
    rows.append((name, _num(seconds, "{:.0f} s"), figures[key]))
  total = summary.total_seconds
  rows.append(("total", _num(total, "{:.0f} s") if total is None else _duration(total), ""))
  width = [max(len(row[i]) for row in rows) for i in range(2)]
  lines = ["Summary"]
  for name, time_, figure in rows:
    lines.append(f"  {name:<{width[0]}}  {time_:>{width[1]}}  {figure}".rstrip())
  lines.append("")
  lines.append(attention_accuracy_line(summary.training))
  lines.append("")
  lines.append("Files to open:")
  what_width = max(len(what) for what, _ in summary.files)
  for what, where in summary.files:
    lines.append(f"  {what:<{what_width}}  {where}")
  return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
  minutes, rest = divmod(round(seconds), 60)
  return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"
