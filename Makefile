# Two entry points for a fresh machine (Python 3.10+ with venv):
#   make demo   - set up .venv, then run the whole pipeline on the built-in demo data
#   make test   - set up .venv, then run ruff and the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_output
PYTEST_ARGS ?= -n 2

.PHONY: setup demo test lint bench

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash demo.sh $(DEMO_DIR)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The oracle suite against the runnable reference (../shared/reference), not part of
# `make test`: sets the reference up in $(DELF_REFERENCE_DIR) (default
# ~/.cache/delf/reference, outside the repository) and prints a table; skips where
# ../shared/reference is absent.
.PHONY: fidelity
fidelity: setup
	$(PY) -m fidelity
