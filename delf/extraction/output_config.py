"""Which config made the files in an extraction output folder (``extraction_config.json``).

Skipping existing outputs is what makes a long extraction resumable, but it used to
keep files made with another config: after lowering ``score_threshold`` because every
``.delf`` was empty, a rerun skipped every image and kept the empty files. So the
output folder records the config (canonical text of the ``DelfConfig``) and the model
files it used; a run with a different config refuses to skip (naming the fields that
differ and ``--noskip_existing``), and ``--noskip_existing`` re-extracts everything and
records the new config.

While such a re-extraction runs the record says ``"replacing": true``: if it is
interrupted, a later run skips only the files written after the record (the old
config's files are older) and finishes the job. A complete run of the whole list
clears the flag.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from google.protobuf import text_format

from delf import atomic_io

RECORD_FILENAME = "extraction_config.json"
FORMAT_VERSION = 1
_MODEL_FILES = ("saved_model.pb", os.path.join("variables", "variables.index"))
_MAX_DIFFERENCES = 4


class ConfigChangedError(ValueError):
  """The output folder holds files made with another config."""


def _model_digest(model_path: str) -> str:
  digest = hashlib.sha256()
  for name in _MODEL_FILES:
    path = os.path.join(model_path, name)
    try:
      with open(path, "rb") as f:
        for block in iter(lambda f=f: f.read(1 << 20), b""):
          digest.update(block)
    except OSError:
      digest.update(f"missing {name}".encode())
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ExtractionRecord:
  config_text: str
  model_digest: str
  replacing: bool = False

  @property
  def fingerprint(self) -> str:
    return hashlib.sha256(f"{self.config_text}\n{self.model_digest}".encode()).hexdigest()

  def to_json(self) -> str:
    return (
      json.dumps(
        {
          "format_version": FORMAT_VERSION,
          "fingerprint": self.fingerprint,
          "config": self.config_text,
          "model_digest": self.model_digest,
          "replacing": self.replacing,
        },
        indent=2,
      )
      + "\n"
    )


def record_for(delf_config) -> ExtractionRecord:
  """The record of a parsed ``DelfConfig`` (the model files are hashed, not their paths)."""
  return ExtractionRecord(
    config_text=text_format.MessageToString(delf_config),
    model_digest=_model_digest(delf_config.model_path),
  )


def read_record(output_dir: str) -> ExtractionRecord | None:
  path = os.path.join(output_dir, RECORD_FILENAME)
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    return ExtractionRecord(data["config"], data["model_digest"], bool(data.get("replacing")))
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: unreadable extraction record ({e}); remove it") from None


def write_record(output_dir: str, record: ExtractionRecord) -> None:
  atomic_io.write_text_atomic(os.path.join(output_dir, RECORD_FILENAME), record.to_json())


def differences(old: ExtractionRecord, new: ExtractionRecord) -> str:
  """``score_threshold: 100.0 -> 0.5``-style summary of what changed."""
  old_lines = [line.strip() for line in old.config_text.splitlines()]
  new_lines = [line.strip() for line in new.config_text.splitlines()]
  removed = [line for line in old_lines if line not in new_lines]
  added = [line for line in new_lines if line not in old_lines]
  changes = []
  for line in removed:
    field = line.split(":", 1)[0]
    match = next((a for a in added if a.split(":", 1)[0] == field), None)
    if match is not None:
      added.remove(match)
      changes.append(f"{line} -> {match.split(':', 1)[1].strip()}")
    else:
      changes.append(f"{line} (removed)")
  changes += [f"{line} (added)" for line in added]
  if old.model_digest != new.model_digest:
    changes.append("the model files changed")
  shown = "; ".join(changes[:_MAX_DIFFERENCES])
  return shown + (f"; and {len(changes) - _MAX_DIFFERENCES} more" if len(changes) > 4 else "")


def prepare(output_dir: str, record: ExtractionRecord, skip_existing: bool) -> float | None:
  """Checks the folder's record against this run's and writes the new one if needed.

  Returns:
    None when existing outputs may be skipped as usual, or a time: outputs older than
    it were made with another config and must be extracted again.

  Raises:
    ConfigChangedError: the folder holds another config's files and ``skip_existing``
      is set (one line naming the differences and ``--noskip_existing``).
  """
  recorded = read_record(output_dir)
  path = os.path.join(output_dir, RECORD_FILENAME)
  if recorded is not None and recorded.fingerprint != record.fingerprint:
    if skip_existing:
      raise ConfigChangedError(
        f"{output_dir} holds features extracted with another config ({path}: "
        f"{differences(recorded, record)}); rerun with --noskip_existing to extract them "
        "again with this config, or use another --output_dir"
      )
    write_record(output_dir, dataclasses.replace(record, replacing=True))
    return None
  if recorded is None:
    write_record(output_dir, record)
    return None
  if recorded.replacing and skip_existing:
    return os.path.getmtime(path)
  return None


def finish(output_dir: str, record: ExtractionRecord) -> None:
  """After a complete run of the whole list: the folder holds only this config's files."""
  recorded = read_record(output_dir)
  if recorded is not None and recorded.replacing and recorded.fingerprint == record.fingerprint:
    write_record(output_dir, record)


def check_store(store_dir: str, record: ExtractionRecord) -> None:
  """A feature store keeps one config: its ids are skipped on a rerun, so another
  config's run is refused (there is no in-place re-extraction of a store)."""
  recorded = read_record(store_dir)
  if recorded is None:
    os.makedirs(store_dir, exist_ok=True)
    write_record(store_dir, record)
  elif recorded.fingerprint != record.fingerprint:
    raise ConfigChangedError(
      f"{store_dir} holds features extracted with another config "
      f"({os.path.join(store_dir, RECORD_FILENAME)}: {differences(recorded, record)}); "
      "use another --output_store for this config"
    )
