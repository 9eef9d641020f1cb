# Run `make install` once; `make run` and `make test` use the .venv it creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSUMERS ?= 3
ARGS ?=

.PHONY: install run test test-fast lint clean status dashboard screenshot

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

# Look at a Redis (REDIS_URL, KEY_PREFIX): `make status ARGS=--watch`, `make dashboard`.
status: install
	$(BIN)/python -m observe.status $(ARGS)

dashboard: install
	$(BIN)/python -m observe.dashboard $(ARGS)

# docs/dashboard.png, from the browser test's run (needs Debian's chromium).
screenshot: install
	EXACTSUM_SCREENSHOT=docs/dashboard.png $(BIN)/pytest -q tests/test_dashboard.py -k browser

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
