#!/usr/bin/env bash
# The Swarm stack (deploy/stack.yml, docs/swarm.md), behind `make stack-*`:
#
#   bash scripts/stack.sh up              deploy the stack and wait until its services run
#   bash scripts/stack.sh scale N         run N consumer tasks
#   bash scripts/stack.sh produce [ARGS]  one producer run on the stack's network; prints its
#                                         report and exits with its verdict (0: exact)
#   bash scripts/stack.sh save FILE       write the images (and REDIS_IMAGE) to FILE, for
#                                         `docker load -i FILE` on nodes without a registry
#   bash scripts/stack.sh down            remove the stack, its network and (on this node)
#                                         Redis's volume
#
# Settings come from the environment, then from .env beside docker-compose.yml (the
# environment wins, as with compose); deploy/stack.yml lists them. Also:
#   STACK_NAME   the stack's name (default exactsum): services <name>_redis, <name>_consumer...
#   REGISTRY     a registry every node can pull from (host:port); unset, the images must
#                exist on each node (`make images`, or docker save | docker load)
#   STACK_DOTENV the .env file to read (default: the checkout's; empty: none)
#   STACK_WAIT   seconds `up` waits for the services, and `down` for their removal (default 180)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STACK_FILE=${STACK_FILE:-$ROOT/deploy/stack.yml}

say() { echo "stack: $*" >&2; }
die() { say "$*"; exit 1; }

# load_dotenv: each NAME=VALUE of .env that the environment does not set already.
load_dotenv() {
    local file=${STACK_DOTENV-$ROOT/.env} line name value
    [ -n "$file" ] && [ -f "$file" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        case "$line" in '' | '#'*) continue ;; esac
        name=${line%%=*}
        name=${name#export }
        name=${name// /}
        [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
        [ -z "${!name+set}" ] || continue
        value=${line#*=}
        value=${value%% #*}
        value=${value#\"}; value=${value%\"}
        value=${value#\'}; value=${value%\'}
        export "$name=$value"
    done <"$file"
}

load_dotenv
STACK_NAME=${STACK_NAME:-exactsum}
STACK_WAIT=${STACK_WAIT:-180}
if [ -n "${REGISTRY:-}" ]; then
    export EXACTSUM_IMAGE_REPO=${EXACTSUM_IMAGE_REPO:-$REGISTRY/exactsum}
fi
IMAGE_REPO=${EXACTSUM_IMAGE_REPO:-exactsum}
IMAGE_TAG=${EXACTSUM_IMAGE_TAG:-latest}
NETWORK="${STACK_NAME}_exactsum"

require_manager() {
    docker info >/dev/null 2>&1 \
        || die "no Docker engine answers (try: bash scripts/docker-engine.sh start)"
    local state
    state=$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}')
    case "$state" in
        "active true") ;;
        active*) die "this engine is a swarm worker, not a manager: run the make stack-*" \
            "commands on a manager (docker node ls there lists them)" ;;
        *) die "this engine is not in a swarm (state: ${state%% *}). Make it the first" \
            "manager with: docker swarm init --advertise-addr <this host's address>" \
            "(on one machine: docker swarm init --advertise-addr 127.0.0.1)" ;;
    esac
}

service_running() {  # service_running SERVICE WANTED: WANTED tasks of SERVICE are running
    local running
    running=$(docker service ps --filter desired-state=running --format '{{.CurrentState}}' \
        "${STACK_NAME}_$1" 2>/dev/null | grep -c '^Running' || true)
    [ "$running" -ge "$2" ]
}

# The node that keeps Redis's volume: the label the stack's placement constraint asks for.
label_redis_node() {
    if [ -n "${REDIS_PLACEMENT:-}" ]; then
        return 0
    fi
    local labelled
    labelled=$(docker node ls -q --filter node.label=exactsum.redis=true)
    if [ -z "$labelled" ]; then
        local self
        self=$(docker info --format '{{.Swarm.NodeID}}')
        say "no node carries the label exactsum.redis=true: labelling this one ($self)," \
            "where Redis and its volume will live"
        docker node update --label-add exactsum.redis=true "$self" >/dev/null
    elif [ "$(echo "$labelled" | wc -l)" -gt 1 ]; then
        die "more than one node carries exactsum.redis=true; Redis's volume must stay on" \
            "one: docker node update --label-rm exactsum.redis <node>"
    fi
}

check_images() {
    local service image missing=()
    for service in consumer dashboard producer; do
        image="$IMAGE_REPO/$service:$IMAGE_TAG"
        docker image inspect "$image" >/dev/null 2>&1 || missing+=("$image")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        die "missing on this node: ${missing[*]} (make images; other nodes need them too," \
            "from REGISTRY or docker save | docker load)"
    fi
}

cmd_up() {
    require_manager
    [ -n "${REGISTRY:-}" ] || check_images
    label_redis_node
    # Without a registry the images exist only in each node's engine: never ask a registry
    # for their digests (the deploy would fail, or pin a digest no other node has).
    local resolve=(--resolve-image never)
    [ -z "${REGISTRY:-}" ] || resolve=(--resolve-image always --with-registry-auth)
    say "deploying $STACK_NAME from ${STACK_FILE#"$ROOT"/} (images $IMAGE_REPO/*:$IMAGE_TAG)"
    docker stack deploy --compose-file "$STACK_FILE" "${resolve[@]}" "$STACK_NAME"
    local replicas=${CONSUMER_REPLICAS:-3} waited=0
    until service_running redis 1 && service_running consumer "$replicas"; do
        if [ "$waited" -ge "$STACK_WAIT" ]; then
            docker stack ps --no-trunc "$STACK_NAME" >&2 || true
            die "the services did not all run within ${STACK_WAIT}s (docker stack ps above)"
        fi
        sleep 2
        waited=$((waited + 2))
    done
    docker stack services "$STACK_NAME"
    say "up: make stack-produce ARGS=\"--count 1000000\"; dashboard on port" \
        "${DASHBOARD_PORT:-8080} of the node that runs it (docker service ps ${STACK_NAME}_dashboard)"
}

cmd_scale() {
    require_manager
    local n=${1:-}
    [[ "$n" =~ ^[0-9]+$ ]] || die "scale needs a number of consumers, got '${n}' (make stack-scale N=6)"
    docker service scale "${STACK_NAME}_consumer=$n"
}

cmd_produce() {
    require_manager
    docker network inspect "$NETWORK" >/dev/null 2>&1 \
        || die "no network $NETWORK: is the stack $STACK_NAME up? (make stack-up)"
    # The producer's settings pass through by name (-e NAME takes the value from here).
    local env_args=() name
    for name in $(compgen -e); do
        case "$name" in
            PRODUCER_REDIS_*) ;;
            PRODUCER_* | KEY_PREFIX | LOG_LEVEL | LOG_FORMAT) env_args+=(-e "$name") ;;
        esac
    done
    # -i and -t only when there is a terminal or piped input: `--input -` reads stdin.
    local tty_args=(-i)
    [ -t 0 ] && [ -t 1 ] && tty_args=(-it)
    exec docker run --rm "${tty_args[@]}" --init --network "$NETWORK" \
        --label "exactsum.stack=$STACK_NAME" \
        -e "REDIS_URL=${REDIS_URL:-redis://redis:6379/0}" \
        -e "REDIS_USERNAME=${PRODUCER_REDIS_USERNAME:-}" \
        -e "REDIS_PASSWORD=${PRODUCER_REDIS_PASSWORD:-}" \
        -e TRANSPORT=native "${env_args[@]}" \
        "$IMAGE_REPO/producer:$IMAGE_TAG" "$@"
}

cmd_save() {
    local file=${1:-}
    [ -n "$file" ] || die "save needs a file name"
    check_images
    local images=("$IMAGE_REPO/consumer:$IMAGE_TAG" "$IMAGE_REPO/dashboard:$IMAGE_TAG"
                  "$IMAGE_REPO/producer:$IMAGE_TAG" "${REDIS_IMAGE:-redis:7.2.5}")
    docker save -o "$file" "${images[@]}"
    say "wrote ${images[*]} to $file; on each other node: docker load -i $file"
}

cmd_down() {
    require_manager
    # Producer runs still attached to the network (their `docker run` was interrupted).
    local leftovers
    leftovers=$(docker ps -aq --filter "label=exactsum.stack=$STACK_NAME")
    [ -z "$leftovers" ] || docker rm --force $leftovers >/dev/null
    docker stack rm "$STACK_NAME" >/dev/null 2>&1 || true
    # `stack rm` returns before the tasks have stopped (each consumer has its grace); the
    # network and the volume can only go once they have.
    local waited=0
    while docker ps -aq --filter "label=com.docker.stack.namespace=$STACK_NAME" | grep -q . \
        || docker network inspect "$NETWORK" >/dev/null 2>&1; do
        if [ "$waited" -ge "$STACK_WAIT" ]; then
            die "the stack's containers or network are still there after ${STACK_WAIT}s"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    if docker volume inspect "${STACK_NAME}_redis-data" >/dev/null 2>&1; then
        docker volume rm "${STACK_NAME}_redis-data" >/dev/null
        say "removed the volume ${STACK_NAME}_redis-data on this node"
    fi
    say "$STACK_NAME removed (Redis's volume on another node stays: docker volume rm" \
        "${STACK_NAME}_redis-data there)"
}

case "${1:-}" in
    up) cmd_up ;;
    scale) shift; cmd_scale "$@" ;;
    produce) shift; cmd_produce "$@" ;;
    save) shift; cmd_save "$@" ;;
    down) cmd_down ;;
    *) echo "usage: $0 up|scale N|produce [ARGS...]|save FILE|down" >&2; exit 2 ;;
esac
