# Run `make install` once; `make run` and `make test` use the .venv it creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSUMERS ?= 3
ARGS ?=

.PHONY: install run test test-fast lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'

install: $(BIN)/python

run: install
	CONSUMERS=$(CONSUMERS) $(BIN)/python scripts/run_local.py $(ARGS)

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow and not e2e"

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Benchmarks (docs/benchmark.md). `make bench` installs the bench extra (RQ, Dramatiq, Celery,
# matplotlib, py-spy, pyinstrument) into the same .venv, runs the full suite (~15 min on 2
# cores) and writes bench/results/. `make bench-quick` (~1 min) needs only `.[dev]` and prints
# one JSON line last. BENCH_ARGS passes options, e.g. BENCH_ARGS="--reps 5" or "--only batch".
BENCH_ARGS ?=

.PHONY: bench bench-quick

$(VENV)/.bench-extra: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: install $(VENV)/.bench-extra
	$(BIN)/python -m bench full $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python -m bench quick $(BENCH_ARGS)
