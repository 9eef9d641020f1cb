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

# The chaos run and the soak (docs/chaos.md). `make chaos SEED=123` replays a seed;
# CHAOS_ARGS / SOAK_ARGS pass more options (`python -m chaos --help`).
SEED ?=
CHAOS_ARGS ?=
SOAK_ARGS ?=
.PHONY: chaos soak

chaos: install
	$(BIN)/python -m chaos $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

soak: install
	$(BIN)/python -m chaos.soak $(SOAK_ARGS)
