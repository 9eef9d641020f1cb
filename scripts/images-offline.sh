#!/usr/bin/env bash
# Build the Python and Redis base images from Debian packages, for hosts that cannot pull from a
# container registry (`make images-offline`).
#
#   1. debootstrap --variant=minbase bookworm into a temporary root, `docker import` it as
#      $OFFLINE_BASE_IMAGE;
#   2. on top of it, apt-get install python3, pip and venv (scripts/offline/python.Dockerfile,
#      which also drops the EXTERNALLY-MANAGED marker and carries the host's CA bundle) and
#      redis-server (scripts/offline/redis.Dockerfile);
#   3. record PYTHON_IMAGE and REDIS_IMAGE in the checkout's .env, which docker compose reads,
#      so that a plain `docker compose up --build` uses these images.
#
# An image that already exists is kept (FORCE=1 rebuilds all three): a second run takes a second.
#
# Environment:
#   OFFLINE_PYTHON_IMAGE  tag of the Python image   (default exactsum/python:3.11-bookworm)
#   OFFLINE_REDIS_IMAGE   tag of the Redis image    (default exactsum/redis:7-bookworm)
#   OFFLINE_BASE_IMAGE    tag of the imported root  (default exactsum/debian:bookworm-minbase)
#   DEBIAN_SUITE          Debian release to bootstrap (default bookworm)
#   DEBIAN_MIRROR         mirror for debootstrap (default: debootstrap's own)
#   HOST_CA_BUNDLE        CA bundle to trust inside the Python image (default $SSL_CERT_FILE or
#                         /etc/ssl/certs/ca-certificates.crt when present; empty: none)
#   FORCE=1               rebuild even the images that exist
#   WRITE_ENV=0           leave .env alone
set -euo pipefail

OFFLINE_PYTHON_IMAGE=${OFFLINE_PYTHON_IMAGE:-exactsum/python:3.11-bookworm}
OFFLINE_REDIS_IMAGE=${OFFLINE_REDIS_IMAGE:-exactsum/redis:7-bookworm}
OFFLINE_BASE_IMAGE=${OFFLINE_BASE_IMAGE:-exactsum/debian:bookworm-minbase}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-}
FORCE=${FORCE:-0}
WRITE_ENV=${WRITE_ENV:-1}
if [ -z "${HOST_CA_BUNDLE+set}" ]; then
    HOST_CA_BUNDLE=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
    [ -f "$HOST_CA_BUNDLE" ] || HOST_CA_BUNDLE=
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OFFLINE_DIR="$ROOT/scripts/offline"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say() { echo "images-offline: $*" >&2; }
die() { say "$*"; exit 1; }

have_image() { [ "$FORCE" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

docker info >/dev/null 2>&1 \
    || die "no Docker engine answers (try: bash scripts/docker-engine.sh start)"

build_base() {
    if have_image "$OFFLINE_BASE_IMAGE"; then
        say "$OFFLINE_BASE_IMAGE exists"
        return 0
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    local rootfs="$WORK/rootfs" started=$SECONDS
    say "debootstrap --variant=minbase $DEBIAN_SUITE (about a minute)"
    # shellcheck disable=SC2086  # an empty DEBIAN_MIRROR means debootstrap's default
    debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" $DEBIAN_MIRROR \
        >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    # The downloaded .debs and package lists are of no use in an image.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -c . \
        | docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
            - "$OFFLINE_BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    say "$OFFLINE_BASE_IMAGE imported after $((SECONDS - started))s"
}

# build IMAGE DOCKERFILE: a tiny context with only the Dockerfile and the CA bundle, so nothing
# of the checkout is sent to the engine.
build() {
    local image=$1 dockerfile=$2 context started=$SECONDS
    if have_image "$image"; then
        say "$image exists"
        return 0
    fi
    context="$WORK/context-$(basename "$dockerfile" .Dockerfile)"
    mkdir -p "$context"
    cp "$dockerfile" "$context/Dockerfile"
    if [ -n "$HOST_CA_BUNDLE" ]; then
        cp "$HOST_CA_BUNDLE" "$context/host-ca-bundle.crt"
    else
        : >"$context/host-ca-bundle.crt"
    fi
    say "building $image"
    # The classic builder (there may be no buildx), no --pull, and a base that exists only
    # locally: nothing is fetched from a registry.
    DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$OFFLINE_BASE_IMAGE" \
        -t "$image" "$context" >"$context.log" 2>&1 \
        || { tail -n 40 "$context.log" >&2; die "building $image failed"; }
    say "$image built after $((SECONDS - started))s"
}

# set_env NAME VALUE: replace NAME's line in .env, or add it; other lines are the user's.
set_env() {
    local file="$ROOT/.env" name=$1 value=$2
    touch "$file"
    if grep -q "^$name=" "$file"; then
        if ! grep -qx "$name=$value" "$file"; then
            say "keeping $name from .env: $(grep "^$name=" "$file")"
        fi
    else
        echo "$name=$value" >>"$file"
        say "wrote $name=$value to .env"
    fi
}

started=$SECONDS
if have_image "$OFFLINE_PYTHON_IMAGE" && have_image "$OFFLINE_REDIS_IMAGE"; then
    say "$OFFLINE_PYTHON_IMAGE and $OFFLINE_REDIS_IMAGE exist (FORCE=1 rebuilds them)"
else
    build_base
    build "$OFFLINE_PYTHON_IMAGE" "$OFFLINE_DIR/python.Dockerfile"
    build "$OFFLINE_REDIS_IMAGE" "$OFFLINE_DIR/redis.Dockerfile"
    say "done after $((SECONDS - started))s"
fi
if [ "$WRITE_ENV" = 1 ]; then
    set_env PYTHON_IMAGE "$OFFLINE_PYTHON_IMAGE"
    set_env REDIS_IMAGE "$OFFLINE_REDIS_IMAGE"
fi
