"""Revisited Oxford / Paris ground truth, protocols and metrics (inference.md §6).

The metric conventions are the revisitop ones behind the published numbers and
are kept exactly (KB-54): AP is the trapezoidal area under the precision-recall
curve normalised by the positives found in the ranking, and precision@k beyond
the last positive is taken at the last positive. Always pass the full ranking.

Ground-truth files
------------------
``ReadDatasetFile`` reads three forms of the same content:

* ``gnd_<name>.mat`` (MATLAB, as distributed with ROxford5k / RParis6k): cell
  arrays ``imlist`` (index image names, no extension) and ``qimlist`` (query
  names), and the struct array ``gnd`` with one entry per query and fields
  ``bbx`` (query box ``[x1, y1, x2, y2]`` in pixels of the full query image),
  ``easy``, ``hard``, ``junk`` (1-based indices into ``imlist``).
* ``<name>.json`` (pain point 26: a ground truth that needs no MATLAB)::

    {"index_base": 0,
     "imlist": ["index_0", "index_1", ...],
     "qimlist": ["query_0", ...],
     "gnd": [{"bbx": [x1, y1, x2, y2], "easy": [0, 4], "hard": [2], "junk": []}, ...]}

  ``index_base`` is required (0 for Python-style indices, 1 for indices copied
  from a ``.mat`` file) so that an off-by-one can never pass silently. ``bbx``
  may be omitted or null (the whole query image is then used).
* ``gnd_<name>.pkl`` (the revisitop Python pickle; 0-based indices).

Whatever the form, the result is the reference's: 0-based index arrays.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

DATASET_NAMES = ["roxford5k", "rparis6k"]
_GROUND_TRUTH_KEYS = ("easy", "hard", "junk")


class GroundTruthError(ValueError):
  """A ground-truth file that cannot be used (the message names the file)."""


def ReadDatasetFile(dataset_file_path: str) -> tuple[list[str], list[str], list[dict]]:
  """Reads a Revisited Oxford/Paris style ground truth (.mat, .json or .pkl).

  Args:
    dataset_file_path: path to the ground-truth file; the extension picks the format.

  Returns:
    query_list: query image names (no extension).
    index_list: index image names (no extension).
    ground_truth: one dict per query with ``easy``/``hard``/``junk`` (0-based index
      arrays; only the fields present in the file) and ``bbx`` (float array
      ``[x1, y1, x2, y2]``; absent from JSON entries without a box).

  Raises:
    GroundTruthError: unreadable file, missing fields, or indices outside the index list.
  """
  path = os.fspath(dataset_file_path)
  extension = os.path.splitext(path)[1].lower()
  if not os.path.isfile(path):
    raise GroundTruthError(f"{path}: ground-truth file not found")
  if extension == ".json":
    query_list, index_list, ground_truth = _ReadJson(path)
  elif extension == ".pkl":
    query_list, index_list, ground_truth = _ReadPickle(path)
  else:
    query_list, index_list, ground_truth = _ReadMat(path)
  _CheckIndices(path, index_list, ground_truth)
  if len(ground_truth) != len(query_list):
    raise GroundTruthError(
      f"{path}: {len(query_list)} query names but {len(ground_truth)} ground-truth entries"
    )
  return query_list, index_list, ground_truth


def _ReadMat(path: str) -> tuple[list[str], list[str], list[dict]]:
  from scipy.io import matlab  # Deferred: SciPy's MATLAB reader is only needed here.

  try:
    content = matlab.loadmat(path)
  except Exception as e:  # SciPy raises several types for a bad file.
    raise GroundTruthError(f"{path}: not a readable MATLAB file ({e})") from None
  for key in ("imlist", "qimlist", "gnd"):
    if key not in content:
      raise GroundTruthError(f"{path}: variable '{key}' missing")
  query_list = [str(name[0]) for name in np.atleast_1d(np.squeeze(content["qimlist"]))]
  index_list = [str(name[0]) for name in np.atleast_1d(np.squeeze(content["imlist"]))]
  ground_truth = []
  for raw in np.atleast_1d(content["gnd"].squeeze()):
    entry = {}
    for key in _GROUND_TRUTH_KEYS:
      if key in raw.dtype.names:
        entry[key] = (raw[key] - 1).flatten()
    if "bbx" in raw.dtype.names:
      entry["bbx"] = np.squeeze(raw["bbx"])
    ground_truth.append(entry)
  return query_list, index_list, ground_truth


def _ReadJson(path: str) -> tuple[list[str], list[str], list[dict]]:
  try:
    with open(path, encoding="utf-8") as f:
      content = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise GroundTruthError(f"{path}: not a readable JSON file ({e})") from None
  if not isinstance(content, dict):
    raise GroundTruthError(f"{path}: expected a JSON object with imlist, qimlist, gnd")
  for key in ("imlist", "qimlist", "gnd", "index_base"):
    if key not in content:
      raise GroundTruthError(f"{path}: field '{key}' missing")
  base = content["index_base"]
  if base not in (0, 1) or isinstance(base, bool):
    raise GroundTruthError(f"{path}: index_base must be 0 or 1, got {base!r}")
  return _FromPythonObjects(path, content["qimlist"], content["imlist"], content["gnd"], base)


def _ReadPickle(path: str) -> tuple[list[str], list[str], list[dict]]:
  try:
    with open(path, "rb") as f:
      content = pickle.load(f)
  except Exception as e:  # Any unpickling failure means the same thing to the user.
    raise GroundTruthError(f"{path}: not a readable pickle file ({e})") from None
  if not isinstance(content, dict) or not {"imlist", "qimlist", "gnd"} <= set(content):
    raise GroundTruthError(f"{path}: expected a dict with imlist, qimlist, gnd")
  return _FromPythonObjects(path, content["qimlist"], content["imlist"], content["gnd"], 0)


def _FromPythonObjects(
  path: str, qimlist: Any, imlist: Any, gnd: Any, base: int
) -> tuple[list[str], list[str], list[dict]]:
  if not isinstance(gnd, list) or not all(isinstance(g, dict) for g in gnd):
    raise GroundTruthError(f"{path}: 'gnd' must be a list of objects")
  ground_truth = []
  for i, raw in enumerate(gnd):
    entry = {}
    for key in _GROUND_TRUTH_KEYS:
      if key in raw:
        try:
          values = np.asarray(raw[key], dtype=np.int64).flatten()
        except (TypeError, ValueError):
          raise GroundTruthError(f"{path}: gnd[{i}].{key} is not a list of integers") from None
        entry[key] = values - base
    if raw.get("bbx") is not None:
      bbx = np.asarray(raw["bbx"], dtype=np.float64).squeeze()
      if bbx.shape != (4,):
        raise GroundTruthError(f"{path}: gnd[{i}].bbx must be [x1, y1, x2, y2]")
      entry["bbx"] = bbx
    ground_truth.append(entry)
  return [str(q) for q in qimlist], [str(x) for x in imlist], ground_truth


def _CheckIndices(path: str, index_list: Sequence[str], ground_truth: Sequence[dict]) -> None:
  for i, entry in enumerate(ground_truth):
    for key in _GROUND_TRUTH_KEYS:
      values = entry.get(key)
      if (
        values is not None and values.size and (values.min() < 0 or values.max() >= len(index_list))
      ):
        raise GroundTruthError(
          f"{path}: query {i} '{key}' has indices outside the {len(index_list)} index images"
        )


def ParseEasyMediumHardGroundTruth(
  ground_truth: Sequence[dict],
) -> tuple[list[dict], list[dict], list[dict]]:
  """Builds the easy/medium/hard protocols: per query ``{"ok": ..., "junk": ...}``.

  easy: ok = easy, junk = junk + hard; medium: ok = easy + hard, junk = junk;
  hard: ok = hard, junk = junk + easy.
  """
  easy, medium, hard = [], [], []
  for entry in ground_truth:
    e, h, j = (np.asarray(entry[key]) for key in _GROUND_TRUTH_KEYS)
    easy.append({"ok": e, "junk": np.concatenate([j, h])})
    medium.append({"ok": np.concatenate([e, h]), "junk": j})
    hard.append({"ok": h, "junk": np.concatenate([j, e])})
  return easy, medium, hard


def AdjustPositiveRanks(positive_ranks: np.ndarray, junk_ranks: np.ndarray) -> np.ndarray:
  """Removes junk images from the ranking: each positive rank drops by the junk before it.

  Both inputs are sorted 0-based positions. Like the reference, ``positive_ranks``
  (when it is a NumPy array) is modified in place and returned.
  """
  if not isinstance(positive_ranks, np.ndarray):
    positive_ranks = np.asarray(positive_ranks)
  junk_ranks = np.asarray(junk_ranks)
  if not junk_ranks.size:
    return positive_ranks
  positive_ranks -= np.searchsorted(junk_ranks, positive_ranks, side="left").astype(
    positive_ranks.dtype
  )
  return positive_ranks


def ComputeAveragePrecision(positive_ranks: np.ndarray) -> float:
  """Trapezoidal average precision of sorted 0-based positive ranks (revisitop)."""
  num_expected_positives = len(positive_ranks)
  average_precision = 0.0
  if not num_expected_positives:
    return average_precision
  recall_step = 1.0 / num_expected_positives
  for i, rank in enumerate(positive_ranks):
    left_precision = 1.0 if not rank else i / rank
    right_precision = (i + 1) / (rank + 1)
    average_precision += (left_precision + right_precision) * recall_step / 2
  return float(average_precision)


def ComputePRAtRanks(
  positive_ranks: np.ndarray, desired_pr_ranks: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
  """Precision and recall at the 1-based ranks ``desired_pr_ranks``.

  Precision at a rank beyond the last positive is the precision at the last
  positive (KB-54).
  """
  num_ranks = len(desired_pr_ranks)
  precisions = np.zeros([num_ranks])
  recalls = np.zeros([num_ranks])
  num_expected_positives = len(positive_ranks)
  if not num_expected_positives:
    return precisions, recalls
  one_indexed = np.asarray(positive_ranks) + 1
  last_positive = one_indexed.max()
  for i, desired_pr_rank in enumerate(desired_pr_ranks):
    recalls[i] = np.sum(one_indexed <= desired_pr_rank) / num_expected_positives
    precision_rank = min(last_positive, desired_pr_rank)
    precisions[i] = np.sum(one_indexed <= precision_rank) / precision_rank
  return precisions, recalls


def ComputeMetrics(
  sorted_index_ids: np.ndarray, ground_truth: Sequence[dict], desired_pr_ranks: Sequence[int]
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """mAP and mean precision/recall at ranks over all queries with positives.

  Args:
    sorted_index_ids: ``[Q, I]`` index ids, best first, for every query.
    ground_truth: per query ``{"ok": ids, "junk": ids}`` (one protocol).
    desired_pr_ranks: 1-based ranks k for P@k and R@k.

  Returns:
    ``(mean_ap, mean_precisions [K], mean_recalls [K], aps [Q], precisions [Q, K],
    recalls [Q, K])``; queries without positives get NaN rows and are left out of
    the means.

  Raises:
    ValueError: a rank beyond the number of index images, or no query with positives.
  """
  sorted_index_ids = np.asarray(sorted_index_ids)
  num_queries = len(ground_truth)
  num_index_images = sorted_index_ids.shape[1]
  num_ranks = len(desired_pr_ranks)
  if max(desired_pr_ranks) > num_index_images:
    raise ValueError(
      f"Requested PR ranks up to {max(desired_pr_ranks)}, but only {num_index_images} "
      "index images were ranked"
    )
  if sorted_index_ids.shape[0] != num_queries:
    raise ValueError(
      f"{sorted_index_ids.shape[0]} rankings given for {num_queries} ground-truth queries"
    )
  aps = np.zeros([num_queries])
  precisions = np.zeros([num_queries, num_ranks])
  recalls = np.zeros([num_queries, num_ranks])
  mean_ap = 0.0
  mean_precisions = np.zeros([num_ranks])
  mean_recalls = np.zeros([num_ranks])
  num_empty = 0
  positions = np.arange(num_index_images)
  for i in range(num_queries):
    ok = np.asarray(ground_truth[i]["ok"])
    junk = np.asarray(ground_truth[i]["junk"])
    if not ok.size:
      aps[i] = np.nan
      precisions[i, :] = np.nan
      recalls[i, :] = np.nan
      num_empty += 1
      continue
    positive_ranks = positions[np.isin(sorted_index_ids[i], ok)]
    junk_ranks = positions[np.isin(sorted_index_ids[i], junk)]
    adjusted = AdjustPositiveRanks(positive_ranks, junk_ranks)
    aps[i] = ComputeAveragePrecision(adjusted)
    precisions[i, :], recalls[i, :] = ComputePRAtRanks(adjusted, desired_pr_ranks)
    mean_ap += aps[i]
    mean_precisions += precisions[i, :]
    mean_recalls += recalls[i, :]
  num_valid = num_queries - num_empty
  if not num_valid:
    raise ValueError("No query has any positive ('ok') index image; metrics are undefined")
  mean_ap /= num_valid
  mean_precisions /= num_valid
  mean_recalls /= num_valid
  return float(mean_ap), mean_precisions, mean_recalls, aps, precisions, recalls


def CreateConfigForTestDataset(dataset: str, dir_main: str) -> dict:
  """Configuration of a revisitop test dataset read from ``<dir_main>/gnd_<dataset>.pkl``.

  Returns a dict with ``gnd_fname``, ``ext``, ``qext``, ``dir_data``, ``dir_images``,
  ``n``, ``nq``, ``im_fname(cfg, i)``, ``qim_fname(cfg, i)``, ``dataset`` and the
  pickle's ``imlist``/``qimlist``/``gnd``.

  Raises:
    ValueError: "Unknown dataset" for a name outside ``DATASET_NAMES``.
  """
  dataset = dataset.lower()
  if dataset not in DATASET_NAMES:
    raise ValueError(f"Unknown dataset: {dataset}!")
  gnd_fname = os.path.join(dir_main, f"gnd_{dataset}.pkl")
  try:
    with open(gnd_fname, "rb") as f:
      cfg = pickle.load(f)
  except OSError as e:
    raise GroundTruthError(f"{gnd_fname}: cannot read ({e.strerror})") from None
  cfg["gnd_fname"] = gnd_fname
  cfg["ext"] = ".jpg"
  cfg["qext"] = ".jpg"
  cfg["dir_data"] = dir_main
  cfg["dir_images"] = os.path.join(
    dir_main, "oxford5k_images" if dataset == "roxford5k" else "paris6k_images"
  )
  cfg["n"] = len(cfg["imlist"])
  cfg["nq"] = len(cfg["qimlist"])
  cfg["im_fname"] = _ConfigImname
  cfg["qim_fname"] = _ConfigQimname
  cfg["dataset"] = dataset
  return cfg


def _ConfigImname(cfg: dict, i: int) -> str:
  return os.path.join(cfg["dir_images"], cfg["imlist"][i] + cfg["ext"])


def _ConfigQimname(cfg: dict, i: int) -> str:
  return os.path.join(cfg["dir_images"], cfg["qimlist"][i] + cfg["qext"])
