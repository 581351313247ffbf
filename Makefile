# m3search: two commands set everything up on a fresh machine.
#   make demo   installs, then embeds the bundled corpus offline and answers three queries
#   make test   installs, then runs lint, type checks and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/m3search demo

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
