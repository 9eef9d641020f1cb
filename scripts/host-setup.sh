#!/usr/bin/env bash
# Prepare a Debian/Ubuntu host (as root) for `make run` and `make test`: the system packages the
# tests use, a running Docker engine with the compose plugin, and the offline base images.
# Idempotent: what is already there is left alone. `make host-setup` runs it; so does CI.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)   # make run, the tests' servers
command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)  # the failover tests, chaos --redis sentinel
command -v openssl >/dev/null || missing+=(openssl)             # the TLS test's certificate
command -v ip >/dev/null || missing+=(iproute2)                 # the chaos run's namespaces
# The dashboard's browser test drives Debian's Chromium with Playwright (never a browser that
# Playwright downloads); under CI=true it fails when /usr/bin/chromium is missing.
[ -x /usr/bin/chromium ] || missing+=(chromium)
if ((${#missing[@]})); then
    echo "host-setup: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash scripts/docker-engine.sh start
bash scripts/images-offline.sh
