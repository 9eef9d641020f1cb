#!/usr/bin/env bash
# `make status`: python -m observe.status against the compose stack's Redis, which is not
# published on the host. It runs inside the dashboard's container when that is up, else in a
# throwaway container of the dashboard's image on the stack's network (`make up-rq` has no
# dashboard). Options pass through: `make status ARGS=--watch`, `ARGS=--json`.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE=${COMPOSE:-docker compose}

# shellcheck disable=SC2086  # COMPOSE is a command and its options
if [ -z "$($COMPOSE ps --status running --quiet redis 2>/dev/null)" ]; then
    echo "make status: the compose stack's Redis is not running (\`make up\` starts it;" \
        "\`REDIS_URL=redis://host:port/0 make status\` looks at another Redis)" >&2
    exit 1
fi
# A terminal for --watch when there is one; none for scripts and pipes.
tty=()
[ -t 0 ] && [ -t 1 ] || tty=(-T)
# shellcheck disable=SC2086
if [ -n "$($COMPOSE ps --status running --quiet dashboard 2>/dev/null)" ]; then
    exec $COMPOSE exec ${tty[@]+"${tty[@]}"} dashboard python -m observe.status "$@"
fi
# shellcheck disable=SC2086
exec $COMPOSE run --rm --no-deps ${tty[@]+"${tty[@]}"} dashboard python -m observe.status "$@"
