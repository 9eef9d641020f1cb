#!/usr/bin/env bash
# `make up` / `make up-rq`: build and start the stack in the background, show the run's progress,
# and end with the producer's report, its verdict the last line; exit with the producer's status.
#
#   bash scripts/up.sh producer      Redis, the consumers, the dashboard and one producer run
#   bash scripts/up.sh rq-producer   the same on RQ (the profile `rq`): RQ consumers, rq-dashboard
#
# The build's and the other services' output goes to a log file (UP_LOG), not the terminal; its
# path is printed, and its last lines are shown when the stack does not come up.
set -euo pipefail
cd "$(dirname "$0")/.."

producer=${1:-producer}
COMPOSE=${COMPOSE:-docker compose}
project=${COMPOSE_PROJECT_NAME:-exactsum}
UP_LOG=${UP_LOG:-${TMPDIR:-/tmp}/$project-up.log}

say() { echo "up: $*" >&2; }

say "building the images and starting the stack (log: $UP_LOG)"
started=$SECONDS
# `up producer` with its dependencies; `make up` starts the dashboard too (no service named).
if [ "$producer" = producer ]; then services=(); else services=("$producer"); fi
# shellcheck disable=SC2086  # COMPOSE is a command and its options
if ! $COMPOSE up --build --detach ${services[@]+"${services[@]}"} >"$UP_LOG" 2>&1; then
    tail -n 40 "$UP_LOG" >&2
    say "the stack did not come up (full log: $UP_LOG)"
    exit 1
fi
# shellcheck disable=SC2086
container=$($COMPOSE ps --all --quiet "$producer")
say "up after $((SECONDS - started)) s; $producer is running"

# The run's progress (the producer's stderr) while it runs; its report (stdout) once it is done,
# so that nothing of the stack's comes after the verdict.
docker logs --follow "$container" 2>&1 >/dev/null | sed -u 's/^/  /' >&2 || true
status=$(docker wait "$container")
if [ "$producer" = producer ]; then
    say "$producer exited with status $status; the consumers keep serving (make status," \
        "make logs, make produce, make down)"
else
    say "$producer exited with status $status; the RQ consumers and rq-dashboard" \
        "(http://127.0.0.1:${RQ_DASHBOARD_PORT:-9181}/) keep serving (make logs, make down)"
fi
echo
docker logs "$container" 2>/dev/null
exit "$status"
