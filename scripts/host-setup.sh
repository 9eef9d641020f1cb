#!/usr/bin/env bash
# Prepare a Debian/Ubuntu host for `make up`, `make run` and `make test`: the system packages the
# tests use, a running Docker engine with the compose plugin, and the base images compose builds
# on (pulled, or built from Debian packages where no registry answers).
#
#   bash scripts/host-setup.sh              everything, as root (`make host-setup`, CI)
#   bash scripts/host-setup.sh --for TARGET only what TARGET needs and lacks: the pre-flight of
#                                           `make up`, `make test`, `make test-fast`, `make run`
#                                           (TARGET up, test, test-fast, run)
#
# With --for, a host that has everything passes in a fraction of a second and prints nothing.
# What is missing is set up when run as root (its progress on stderr); otherwise one line on
# stdout, which make shows as its error, names what is missing and the one command that sets it
# up, and the exit status is 1. Idempotent: what is there is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

say() { echo "host-setup: $*" >&2; }

# The system packages TARGET uses (default: everything's); fills the array `packages` with those
# that are missing.
missing_packages() {
    local target=${1:-all}
    packages=()
    command -v redis-server >/dev/null || packages+=(redis-server)   # make run, the tests' servers
    # make install's .venv (Debian splits venv and ensurepip out of python3).
    python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
    [ "$target" != run ] || return 0
    command -v openssl >/dev/null || packages+=(openssl)             # the TLS test's certificate
    command -v ip >/dev/null || packages+=(iproute2)                 # the chaos run's namespaces
    # The failover tests and chaos --redis sentinel.
    command -v redis-sentinel >/dev/null || packages+=(redis-sentinel)
    # The dashboard's browser test drives Debian's Chromium with Playwright (never a browser that
    # Playwright downloads); under CI=true it fails when /usr/bin/chromium is missing.
    [ -x /usr/bin/chromium ] || packages+=(chromium)
}

install_packages() {
    missing_packages "${1:-all}"
    ((${#packages[@]})) || return 0
    say "installing ${packages[*]}"
    apt-get update -qq
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${packages[@]}" >/dev/null
}

engine_ready() {
    docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1
}

# A base image setting as compose sees it: the environment, else .env, else the compose file's
# default.
image_setting() {
    local name=$1 default=$2 value=${!1:-}
    if [ -z "$value" ] && [ -f .env ]; then
        value=$(sed -n "s/^[[:space:]]*$name=//p" .env | tail -n 1 | sed 's/[[:space:]]#.*//')
        value=${value//\"/}
        value=${value//\'/}
    fi
    echo "${value:-$default}"
}

base_images() {
    image_setting PYTHON_IMAGE python:3.12-slim
    image_setting REDIS_IMAGE redis:7.2.5
}

images_present() {
    # shellcheck disable=SC2046  # two image names, one per line
    docker image inspect $(base_images) >/dev/null 2>&1
}

# Pull the base images; where no registry answers (air-gapped hosts, this project's build
# machines), build stand-ins from Debian packages and name them in .env.
setup_images() {
    images_present && return 0
    local image pulled=1
    for image in $(base_images); do
        docker image inspect "$image" >/dev/null 2>&1 && continue
        say "pulling $image"
        timeout 300 docker pull -q "$image" >/dev/null 2>&1 || { pulled=0; break; }
    done
    if [ "$pulled" = 0 ]; then
        say "no registry answers; building the base images from Debian packages"
        bash scripts/images-offline.sh
    fi
}

# Redis warns at every start, and a background save can fail under memory pressure, unless the
# kernel may overcommit memory; containers share the host's setting. Root can set it (until the
# next boot); anyone else keeps the warning, which changes nothing in this project's runs.
setup_overcommit() {
    [ "$(cat /proc/sys/vm/overcommit_memory 2>/dev/null)" != 1 ] || return 0
    [ "$(id -u)" = 0 ] || return 0
    if sysctl -q -w vm.overcommit_memory=1 >/dev/null 2>&1; then
        say "set vm.overcommit_memory=1 (Redis asks for it; until the next boot)"
    fi
}

# What TARGET needs and lacks, as words for the one line a user without root reads; the pieces to
# set up go into the array `pieces`.
missing_for() {
    local target=$1 words=()
    pieces=()
    if [ "$target" != up ]; then
        missing_packages "$target"
        if ((${#packages[@]})); then
            pieces+=(packages)
            words+=("${packages[*]}")
        fi
    fi
    if [ "$target" = up ] || [ "$target" = test ]; then
        if ! engine_ready; then
            pieces+=(engine images)
            if ! command -v docker >/dev/null; then
                words+=("a Docker engine")
            elif ! docker info >/dev/null 2>&1; then
                words+=("a running Docker engine")
            else
                words+=("the compose plugin")
            fi
        elif ! images_present; then
            pieces+=(images)
            words+=("the base images $(base_images | paste -sd ' ')")
        fi
    fi
    missing_words=$(IFS=,; echo "${words[*]}" | sed 's/,/, /g')
}

cmd_for() {
    local target=$1 piece
    case $target in up | test | test-fast | run) ;; *) say "unknown target $target"; exit 2 ;; esac
    missing_for "$target"
    if ((${#pieces[@]} == 0)); then
        setup_overcommit
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "make $target: missing $missing_words; run \`sudo make host-setup\` once, then \`make $target\` again"
        exit 1
    fi
    say "make $target needs $missing_words; setting up only that"
    # Nothing of the set-up on stdout: make reads the pre-flight's stdout as its error line, and
    # a piece that fails must say so there.
    for piece in "${pieces[@]}"; do
        case $piece in
            packages) install_packages "$target" ;;
            engine) bash scripts/docker-engine.sh start ;;
            images) setup_images ;;
        esac >&2 || {
            echo "make $target: setting up $piece failed (see above); \`sudo make host-setup\` retries it"
            exit 1
        }
    done
    setup_overcommit
}

cmd_all() {
    [ "$(id -u)" = 0 ] || { say "run as root (sudo make host-setup)"; exit 1; }
    install_packages
    bash scripts/docker-engine.sh start
    setup_images
    setup_overcommit
}

case "${1:-}" in
    "") cmd_all ;;
    --for) cmd_for "${2:?--for needs a target: up, test, test-fast or run}" ;;
    *) echo "usage: $0 [--for up|test|test-fast|run]" >&2; exit 2 ;;
esac
