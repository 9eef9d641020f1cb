"""``python -m consumer_service.healthcheck``: healthy while this consumer's heartbeat key lives.

For container health checks: the consumer writes its id to ``--id-file`` at start, and this
command, run in the same container, exits 0 if that consumer's heartbeat is in Redis, 1 if not.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import redis

from exactsum.cluster import connect
from exactsum.keys import Keys
from exactsum.options import EnvParser, redis_target


def main(argv: Sequence[str] | None = None) -> int:
    parser = EnvParser(prog="python -m consumer_service.healthcheck",
                       description="Exit 0 if this consumer's heartbeat is alive in Redis.")
    parser.add_common_options()
    parser.add_env_option("--id-file", env="CONSUMER_ID_FILE", default="/tmp/consumer-id",
                          help="file where the consumer wrote its id")
    args = parser.parse_args(argv)
    try:
        with open(args.id_file, encoding="utf-8") as source:
            consumer_id = source.read().strip()
    except OSError as exc:
        print(f"unhealthy: no consumer id in {args.id_file}: {exc.strerror}", file=sys.stderr)
        return 1
    client = connect(redis_target(args), socket_timeout=2.0)
    try:
        alive = client.exists(Keys(args.key_prefix).heartbeat(consumer_id))
    except redis.RedisError as exc:
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not alive:
        print(f"unhealthy: heartbeat of {consumer_id} is gone", file=sys.stderr)
        return 1
    print(f"healthy: {consumer_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
