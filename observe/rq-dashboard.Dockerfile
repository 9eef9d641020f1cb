# rq-dashboard, RQ's own web view of its queues, jobs and workers, for the compose profile `rq`
# (the services on --transport rq). Build context: the repository root
# (docker build -f observe/rq-dashboard.Dockerfile .). Only classic-builder syntax, so it builds
# with and without BuildKit.
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Dependencies in their own layer, read from pyproject.toml (the core ones, which pin rq's major
# version to the services', and the `rq-dashboard` extra), so the dashboard reads RQ's records
# with the same rq as the services that write them.
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires'] + p['project']['dependencies'] + p['project']['optional-dependencies']['rq-dashboard']))" > /tmp/requirements.txt \
    && python -m pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The package too: a job's arguments are pickled, and showing them may need exactsum's classes.
COPY . /src
# The user is a regular one (10001 is past the system range, where `useradd --system` warns).
RUN python -m pip install --no-deps --no-build-isolation /src \
    && rm -rf /src \
    && groupadd --gid 10001 exactsum \
    && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init --home-dir /nonexistent \
        --shell /usr/sbin/nologin exactsum

WORKDIR /app
USER 10001:10001
# rq-dashboard reads its settings from RQ_DASHBOARD_* variables. Inside a container it listens on
# every interface; publish it on the host's loopback only (ports: "127.0.0.1:9181:9181").
# Deleting jobs and emptying queues from the browser is off: a deleted job is a batch that is
# never counted, and the run could no longer be verified. RQ_DASHBOARD_DISABLE_DELETE=false
# turns it back on.
ENV RQ_DASHBOARD_REDIS_URL=redis://redis:6379/0 \
    RQ_DASHBOARD_BIND=0.0.0.0 \
    RQ_DASHBOARD_PORT=9181 \
    RQ_DASHBOARD_DISABLE_DELETE=true
EXPOSE 9181

# Healthy while the page answers (the image has no curl; Python is there).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RQ_DASHBOARD_PORT', '9181') + '/', timeout=4)"]

# Exec form: no shell in between, so SIGTERM reaches the server (PID 1 here, or the child of the
# init that compose adds) and it stops at once.
CMD ["rq-dashboard"]
