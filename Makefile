# Run `make install` once; `make run` and `make test` use the .venv it creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSUMERS ?= 3
ARGS ?=

.PHONY: install run test test-fast lint clean host-setup status dashboard screenshot

# Re-installs when pyproject.toml changes, so a pulled dependency never goes missing.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	CONSUMERS=$(CONSUMERS) $(BIN)/python scripts/run_local.py $(ARGS)

test: install
	$(BIN)/pytest

# The unit tests and the integration tests of a few seconds each (under two minutes on two
# cores); `make test` runs everything: the slow fault runs, tests/chaos and tests/e2e too.
test-fast: install
	$(BIN)/pytest -m "not slow" tests/unit tests/integration

# Look at a Redis (REDIS_URL, KEY_PREFIX): `make status ARGS=--watch`, `make dashboard`.
status: install
	$(BIN)/python -m observe.status $(ARGS)

dashboard: install
	$(BIN)/python -m observe.dashboard $(ARGS)

# docs/dashboard.png, from the browser test's run (needs Debian's chromium).
screenshot: install
	EXACTSUM_SCREENSHOT=docs/dashboard.png $(BIN)/pytest -q tests/integration/test_dashboard.py -k browser

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# As root on a fresh Debian/Ubuntu host: redis-server and the other system packages the tests
# use, a Docker engine with the compose plugin, and the offline base images.
host-setup:
	bash scripts/host-setup.sh

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

# --- Containers ----------------------------------------------------------------------------
# docker compose reads PYTHON_IMAGE, REDIS_IMAGE and every other setting from the environment
# or from .env (see .env.example); `make images-offline` writes the two image names there.
COMPOSE ?= docker compose
# Consumer replicas for `make scale`.
N ?= 3

.PHONY: up up-rq down logs scale produce images-offline docker-engine docker-engine-stop

# Redis, the consumers and one producer run in the background; prints the run's report and
# exits with the producer's status. The consumers keep serving until `make down`.
up:
	$(COMPOSE) up --build --detach
	$(COMPOSE) logs --follow --no-log-prefix producer
	@status=$$(docker wait $$($(COMPOSE) ps --all --quiet producer)); \
		echo "producer exited with status $$status; the consumers keep serving (make logs, make down)"; \
		exit $$status

# The same on RQ (the profile `rq`): Redis, the RQ consumers, rq-dashboard
# (http://127.0.0.1:9181/) and one RQ producer run; the native pair is not started. Naming
# rq-producer brings up its profile's services; `--profile rq up` alone would start both pairs.
up-rq:
	$(COMPOSE) up --build --detach rq-producer
	$(COMPOSE) logs --follow --no-log-prefix rq-producer
	@status=$$(docker wait $$($(COMPOSE) ps --all --quiet rq-producer)); \
		echo "rq-producer exited with status $$status; the RQ consumers and rq-dashboard keep serving (make logs, make down)"; \
		exit $$status

# Stop and remove the stack (the rq profile's services too), its network and Redis's volume.
down:
	$(COMPOSE) down --volumes --remove-orphans

logs:
	$(COMPOSE) logs --follow

# Run N consumers (more or fewer) without touching the rest of the stack.
scale:
	$(COMPOSE) up --detach --no-recreate --scale consumer=$(N) consumer

# Another producer run against the consumers that are up: make produce ARGS="--count 1000000".
# --no-deps, or compose would first set the consumers back to their configured replica count.
produce:
	$(COMPOSE) run --rm --no-deps producer $(ARGS)

# Python and Redis base images built from Debian packages, for hosts that cannot pull images.
images-offline:
	bash scripts/images-offline.sh

# A Docker engine and the compose plugin (installs and starts them where missing).
docker-engine:
	bash scripts/docker-engine.sh start

docker-engine-stop:
	bash scripts/docker-engine.sh stop

# Benchmarks (docs/benchmark.md). `make bench` installs the bench extra (RQ, Dramatiq, Celery,
# matplotlib, py-spy, pyinstrument) into the same .venv, runs the full suite (11-13 min on 2
# cores) and writes bench/results/. `make bench-quick` (~1 min) needs only `.[dev]` and prints
# one JSON line last. BENCH_ARGS passes options, e.g. BENCH_ARGS="--reps 5" or "--only batch".
BENCH_ARGS ?=

.PHONY: bench bench-quick

$(VENV)/.bench-extra: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: install $(VENV)/.bench-extra
	$(BIN)/python -m bench full $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python -m bench quick $(BENCH_ARGS)
