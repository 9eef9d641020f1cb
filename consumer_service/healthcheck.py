"""``python -m consumer_service.healthcheck``: healthy while this consumer's heartbeat key lives.

For container health checks: the consumer writes its id to ``--id-file`` at start, and this
command, run in the same container, exits 0 if that consumer's heartbeat is in Redis, 1 if not.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from exactsum.cluster import connect
from exactsum.keys import Keys
from exactsum.options import option, parse
from exactsum.settings import RedisSettings


@dataclass(frozen=True)
class HealthcheckSettings(RedisSettings):
    PROG = "python -m consumer_service.healthcheck"
    DESCRIPTION = "Exit 0 if this consumer's heartbeat is alive in Redis."

    # The consumer's own --id-file, with the path the images give it as the default.
    id_file: str = option("/tmp/consumer-id", env="CONSUMER_ID_FILE",
                          help="file where the consumer wrote its id")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(HealthcheckSettings, argv)
    try:
        with open(args.id_file, encoding="utf-8") as source:
            consumer_id = source.read().strip()
    except OSError as exc:
        print(f"unhealthy: no consumer id in {args.id_file}: {exc.strerror}", file=sys.stderr)
        return 1
    client = connect(args.redis, socket_timeout=2.0)
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
