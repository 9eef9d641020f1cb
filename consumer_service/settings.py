"""The consumer's settings: a frozen dataclass built from the command line and the environment."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from exactsum.connection import RedisTarget
from exactsum.options import (
    EnvParser,
    non_negative_float,
    positive_float,
    positive_int,
)
from exactsum.replication import Replication


@dataclass(frozen=True)
class ConsumerSettings:
    redis_url: str
    redis_sentinels: tuple[tuple[str, int], ...] | None
    redis_sentinel_master: str
    redis_cluster: str
    min_replicas: int
    replica_timeout: float
    key_prefix: str
    log_level: str
    log_format: str
    threads: int
    block_timeout: float
    heartbeat_ttl: float
    reclaim_interval: float
    grace: float
    work_cpu_us: float
    work_io_ms: float
    id_file: str | None
    max_attempts: int
    fail_rate: float
    flaky_rate: float
    max_claim: int
    stats_file: str | None
    metrics_port: int
    metrics_addr: str
    transport: str
    rq_queue: str
    counters_file: str | None = None

    @property
    def redis(self) -> RedisTarget:
        return RedisTarget(self.redis_url, self.redis_sentinels or (), self.redis_sentinel_master,
                           self.redis_cluster)

    @property
    def replication(self) -> Replication:
        return Replication(self.min_replicas, self.replica_timeout)

    @property
    def heartbeat_interval(self) -> float:
        """Three refreshes per TTL: one late refresh does not let the heartbeat lapse."""
        return self.heartbeat_ttl / 3

    @property
    def socket_timeout(self) -> float:
        """Longer than the blocking claim (and the WAIT after it), or redis-py would time out a
        healthy connection."""
        return self.block_timeout + 2.0 + (self.replica_timeout if self.min_replicas else 0.0)


def build_parser() -> EnvParser:
    parser = EnvParser(
        prog="python -m consumer_service",
        description="Claim batches from the Redis queue and commit them into their run's sum, "
        "exactly once. Runs until SIGTERM or SIGINT.",
    )
    parser.add_common_options()
    add = parser.add_env_option
    add("--threads", env="CONSUMER_THREADS", default=4, type=positive_int,
        help="worker threads, each with its own claim (with --transport rq: RQ worker "
        "processes)")
    add("--block-timeout", env="CONSUMER_BLOCK_TIMEOUT", default=1.0, type=positive_float,
        help="seconds a claim waits on an empty queue before looking again")
    add("--heartbeat-ttl", env="CONSUMER_HEARTBEAT_TTL", default=5.0, type=positive_float,
        help="seconds after the last heartbeat when this consumer's claims may be reclaimed")
    add("--reclaim-interval", env="CONSUMER_RECLAIM_INTERVAL", default=1.0,
        type=positive_float, help="seconds between looks for claims of dead consumers")
    add("--grace", env="CONSUMER_GRACE", default=10.0, type=positive_float,
        help="seconds to finish in-flight batches after SIGTERM before giving them back")
    add("--work-cpu-us", env="CONSUMER_WORK_CPU_US", default=0.0, type=non_negative_float,
        help="simulated CPU-bound work per item, in microseconds (holds the GIL)")
    add("--work-io-ms", env="CONSUMER_WORK_IO_MS", default=0.0, type=non_negative_float,
        help="simulated I/O wait per item, in milliseconds (releases the GIL)")
    add("--id-file", env="CONSUMER_ID_FILE", default=None,
        help="write this consumer's id to FILE at start (read by the health check)")
    add("--max-attempts", env="CONSUMER_MAX_ATTEMPTS", default=3, type=positive_int,
        help="processing attempts of a batch before it goes to dead letters (with "
        "--transport rq, the producer's --rq-retries sets them for each job)")
    add("--fail-rate", env="CONSUMER_FAIL_RATE", default=0.0, type=share,
        help="share of items that always fail (poison), for tests and demos")
    add("--flaky-rate", env="CONSUMER_FLAKY_RATE", default=0.0, type=share,
        help="share of processing attempts that fail once, for tests and demos")
    add("--max-claim", env="CONSUMER_MAX_CLAIM", default=64, type=positive_int,
        help="most queue elements a thread claims and commits at once (small batches are "
        "claimed about 1024 items at a time, large ones one by one); 1: one at a time")
    add("--stats-file", env="CONSUMER_STATS_FILE", default=None,
        help="at exit, write to FILE a JSON summary: items committed and push-to-commit "
        "latency percentiles (for benchmarks)")
    add("--counters-file", env="CONSUMER_COUNTERS_FILE", default=None,
        help="keep in FILE, as JSON, counts of what happened (retries, fenced commits, "
        "reclaims, ...; docs/counters.md), rewritten within 0.1 s of each and at exit")
    parser.add_metrics_options("CONSUMER_METRICS_PORT")
    parser.add_transport_options()
    return parser


def share(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def parse_settings(argv: Sequence[str] | None = None) -> ConsumerSettings:
    parser = build_parser()
    args = parser.parse_args(argv)
    parser.check_transport(args.transport, args.key_prefix)
    parser.check_cluster(args.redis_cluster, args.transport)
    settings = ConsumerSettings(**vars(args))
    if settings.block_timeout + settings.heartbeat_interval >= settings.heartbeat_ttl:
        parser.error(
            f"--block-timeout {settings.block_timeout} plus the heartbeat interval "
            f"({settings.heartbeat_interval:.2f} s, a third of --heartbeat-ttl) must stay below "
            f"--heartbeat-ttl {settings.heartbeat_ttl}: a claim still blocked in Redis when the "
            "heartbeat lapses could land in a list that was already reclaimed"
        )
    if settings.grace >= 3600:
        parser.error("--grace must be under an hour")
    return settings
