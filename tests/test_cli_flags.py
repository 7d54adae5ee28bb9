"""KB-18: integer sizes accept ``128`` and ``128.0`` but reject non-integral values."""

from __future__ import annotations

import pytest
from absl import flags

from delf import cli_flags, progress


@pytest.fixture
def flag_values():
  values = flags.FlagValues()
  cli_flags.DEFINE_integral("autoencoder_dimensions", 128, "dims", flag_values=values)
  return values


@pytest.mark.parametrize(("text", "expected"), [("64", 64), ("64.0", 64), ("1e3", 1000)])
def test_integral_spellings_are_accepted(flag_values, text, expected):
  flag_values(["prog", f"--autoencoder_dimensions={text}"])
  assert flag_values.autoencoder_dimensions == expected
  assert isinstance(flag_values.autoencoder_dimensions, int)


def test_default_is_an_int(flag_values):
  flag_values(["prog"])
  assert flag_values.autoencoder_dimensions == 128
  assert isinstance(flag_values.autoencoder_dimensions, int)


@pytest.mark.parametrize("text", ["128.5", "0", "-4", "abc", ""])
def test_bad_values_are_rejected_with_the_flag_name(flag_values, text):
  with pytest.raises(flags.IllegalFlagValueError, match="autoencoder_dimensions"):
    flag_values(["prog", f"--autoencoder_dimensions={text}"])


def test_help_says_it_is_an_integer(flag_values):
  assert "positive integer" in flag_values.get_help()


def test_progress_line_has_rate_and_eta():
  reporter = progress.ProgressReporter("build", total=10, unit="images", every_items=1000)
  reporter.count = 5
  line = reporter.line(now=reporter._start + 2.0)
  assert line == "build: 5/10 (50.0%), 2.50 images/s, elapsed 2s, ETA 2s"
  assert progress.format_duration(3725) == "1h02m05s"
