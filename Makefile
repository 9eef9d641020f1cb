# `make up` runs the stack in Docker, `make test` the tests; each first sets up what it needs and
# the host lacks (scripts/host-setup.sh --for: as root it installs it, otherwise it says which one
# command to run). `make run` and `make test` use the .venv that `make install` creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSUMERS ?= 3
ARGS ?=
# pytest's options for `make test`: -v names each test as it runs (a long run shows where it is).
# `make test PYTEST_ARGS="-q tests/unit/test_protocol.py"` runs a selection.
PYTEST_ARGS ?= -v
# The pre-flight of a target (scripts/host-setup.sh --for): silent when the host has what the
# target needs; as root it sets up what is missing; otherwise make stops with the one line it
# prints, naming the command to run. It comes before `install`, so a host without python3-venv
# hears it first.
preflight-%:
	@$(eval preflight_stop := $(shell bash scripts/host-setup.sh --for $*))$(if $(preflight_stop),$(error $(preflight_stop)))

.PHONY: install run test test-fast lint clean host-setup status dashboard screenshot options-doc

# Re-installs when pyproject.toml changes, so a pulled dependency never goes missing.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: preflight-run install
	CONSUMERS=$(CONSUMERS) $(BIN)/python scripts/run_local.py $(ARGS)

test: preflight-test install
	$(BIN)/pytest $(PYTEST_ARGS)

# The unit tests and the integration tests of a few seconds each (under two minutes on two
# cores); `make test` runs everything: the slow fault runs, tests/chaos and tests/e2e too.
test-fast: preflight-test-fast install
	$(BIN)/pytest -m "not slow" tests/unit tests/integration $(PYTEST_ARGS)

# The status of the compose stack's runs (`make status ARGS=--watch`), from the dashboard image
# on the stack's network, since Redis is not published; with REDIS_URL set, of that Redis, from
# the .venv (for `make run`'s, or any Redis you reach).
status:
ifdef REDIS_URL
	@$(MAKE) --no-print-directory install
	$(BIN)/python -m observe.status $(ARGS)
else
	@bash scripts/status.sh $(ARGS)
endif

dashboard: install
	$(BIN)/python -m observe.dashboard $(ARGS)

# docs/dashboard.png, from the browser test's run (needs Debian's chromium).
screenshot: install
	EXACTSUM_SCREENSHOT=docs/dashboard.png $(BIN)/pytest -q tests/integration/test_dashboard.py -k browser

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# docs/options.md from the services' --help (tests/unit/test_options_doc.py checks they match).
options-doc: install
	$(BIN)/python scripts/options_doc.py

# As root on a fresh Debian/Ubuntu host: redis-server and the other system packages the tests
# use, a Docker engine with the compose plugin, and the base images (pulled, or built from
# Debian packages where no registry answers). `make up` and `make test` do the part they need.
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

# Redis, the consumers, the dashboard and one producer run in the background; shows the run's
# progress, ends with its report and exits with the producer's status (scripts/up.sh). The
# consumers keep serving until `make down`.
up: preflight-up
	@COMPOSE="$(COMPOSE)" bash scripts/up.sh producer

# The same on RQ (the profile `rq`): Redis, the RQ consumers, rq-dashboard
# (http://127.0.0.1:9181/) and one RQ producer run; the native pair is not started. Naming
# rq-producer brings up its profile's services; `--profile rq up` alone would start both pairs.
up-rq: preflight-up
	@COMPOSE="$(COMPOSE)" bash scripts/up.sh rq-producer

# Stop and remove the stack, the rq profile's services too (`--profile '*'`: compose leaves the
# services of a profile that is not enabled running), its network and Redis's volume.
down:
	$(COMPOSE) --profile '*' down --volumes --remove-orphans

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

# --- Swarm: the stack on one or many Docker hosts (docs/swarm.md) --------------------------
# `make images` builds the producer, consumer and dashboard images from the base images in .env
# (PYTHON_IMAGE), tagged EXACTSUM_IMAGE_TAG (latest). With REGISTRY=host:port they are named
# host:port/exactsum/... and `make images-push` pushes them; without one, `make images-save`
# writes them (and REDIS_IMAGE) to one file for `docker load -i` on each other node.
# The stack-* targets refuse, saying the command to run, on an engine that is no swarm manager.
# STACK_NAME (exactsum) may also come from .env; REGISTRY goes on the command line.
REGISTRY ?=
STACK_NAME ?=
IMAGES_TAR ?= exactsum-images.tar
IMAGE_ENV = $(if $(REGISTRY),EXACTSUM_IMAGE_REPO=$(REGISTRY)/exactsum)
STACK_ENV = $(if $(STACK_NAME),STACK_NAME=$(STACK_NAME)) $(if $(REGISTRY),REGISTRY=$(REGISTRY))

.PHONY: images images-push images-save stack-up stack-scale stack-produce stack-down

images:
	$(IMAGE_ENV) $(COMPOSE) build producer consumer dashboard

images-push:
	@test -n "$(REGISTRY)" || { echo "images-push: set REGISTRY=host:port" >&2; exit 2; }
	$(IMAGE_ENV) $(COMPOSE) push producer consumer dashboard

images-save:
	$(STACK_ENV) bash scripts/stack.sh save $(IMAGES_TAR)

stack-up:
	$(STACK_ENV) bash scripts/stack.sh up

stack-scale:
	$(STACK_ENV) bash scripts/stack.sh scale $(N)

# One producer run on the stack's network: make stack-produce ARGS="--count 1000000".
stack-produce:
	$(STACK_ENV) bash scripts/stack.sh produce $(ARGS)

stack-down:
	$(STACK_ENV) bash scripts/stack.sh down
