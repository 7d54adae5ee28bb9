# Two entry points for a fresh machine (Python 3.10+ with venv):
#   make demo   - set up .venv, then run the whole pipeline on the built-in demo data
#   make test   - set up .venv, then run ruff and the test suite
# Also: make test-protobuf-oldest (CI) runs the file-format tests on the oldest protobuf the
# committed *_pb2.py support, in a second venv; make protos regenerates them there.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_output
PYTEST_ARGS ?= -n 2

# The oldest protobuf runtime the committed gencode supports, and its generator.
PROTOBUF_OLDEST ?= 6.31.1
GRPCIO_TOOLS_GENERATOR ?= 1.74.0
OLDEST_VENV ?= .venv-protobuf-oldest
OLDEST_PY := $(OLDEST_VENV)/bin/python
# Tests that need no TensorFlow: file formats, protos, configs, metrics files.
IO_TESTS ?= tests/test_io_formats.py tests/test_protos.py tests/test_config_io.py \
  tests/test_feature_dump.py tests/test_retrieval_metrics_file.py tests/test_gldv2_io.py

.PHONY: setup demo test lint bench test-protobuf-oldest protos

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

$(OLDEST_VENV)/.installed: pyproject.toml setup.py Makefile
	rm -rf $(OLDEST_VENV)
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_PY) -m pip install --quiet --upgrade pip
	$(OLDEST_PY) -m pip install --quiet "protobuf==$(PROTOBUF_OLDEST)" \
	  "grpcio-tools==$(GRPCIO_TOOLS_GENERATOR)" "numpy>=1.26" "absl-py>=2.0" "pillow>=10" \
	  "pytest>=8" "pytest-timeout>=2.3"
	$(OLDEST_PY) -m pip install --quiet --no-deps -e .
	touch $@

# The file-format tests on the oldest protobuf runtime (no TensorFlow in this venv).
test-protobuf-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_PY) -c "import google.protobuf as p; assert p.__version__ == '$(PROTOBUF_OLDEST)', p.__version__"
	$(OLDEST_PY) -m pytest -q -p no:cacheprovider $(IO_TESTS)

# Regenerates delf/protos/*_pb2.py from protos/*.proto with the generator of record.
protos: $(OLDEST_VENV)/.installed
	$(OLDEST_PY) delf/protos/generate.py
