"""Periodic progress lines for long jobs (plain lines, no progress bars).

Users of the reference expect a printed line every N items; we add the rate
and an ETA so that a 12-hour job says how long it has left.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
  seconds = max(0, round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m{secs:02d}s"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


class ProgressReporter:
  """Prints ``<label>: i/total (p%), r <unit>/s, ETA t`` every ``every`` items or seconds.

  Args:
    label: prefix of each line.
    total: expected number of items (None if unknown).
    unit: what is counted, e.g. "images".
    every_items: print at least every this many items.
    every_seconds: ... or when this many seconds passed since the last line.
    stream: where to print (stdout by default).
  """

  def __init__(
    self,
    label: str,
    total: int | None = None,
    unit: str = "items",
    every_items: int = 100,
    every_seconds: float = 30.0,
    stream: TextIO | None = None,
  ):
    self.label = label
    self.total = total
    self.unit = unit
    self.every_items = every_items
    self.every_seconds = every_seconds
    self.stream = stream
    self.count = 0
    self._start = time.monotonic()
    self._last_time = self._start
    self._last_count = 0

  def update(self, n: int = 1) -> None:
    self.count += n
    now = time.monotonic()
    if (
      self.count - self._last_count >= self.every_items
      or now - self._last_time >= self.every_seconds
    ):
      self._print(now)

  def rate(self) -> float:
    elapsed = time.monotonic() - self._start
    return self.count / elapsed if elapsed > 0 else 0.0

  def line(self, now: float | None = None) -> str:
    now = time.monotonic() if now is None else now
    elapsed = now - self._start
    rate = self.count / elapsed if elapsed > 0 else 0.0
    text = f"{self.label}: {self.count}"
    if self.total:
      text += f"/{self.total} ({100.0 * self.count / self.total:.1f}%)"
    text += f", {rate:.2f} {self.unit}/s, elapsed {format_duration(elapsed)}"
    if self.total and rate > 0 and self.count < self.total:
      text += f", ETA {format_duration((self.total - self.count) / rate)}"
    return text

  def _print(self, now: float) -> None:
    print(self.line(now), file=self.stream or sys.stdout, flush=True)
    self._last_time = now
    self._last_count = self.count

  def done(self) -> None:
    """Prints the final line."""
    self._print(time.monotonic())
