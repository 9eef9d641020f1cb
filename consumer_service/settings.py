"""The consumer's settings: a frozen dataclass whose fields are its options
(:mod:`exactsum.options`), built from the command line and the environment."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from exactsum import options
from exactsum.options import (
    EnvParser,
    Options,
    SettingsError,
    non_negative_float,
    option,
    positive_float,
    positive_int,
)
from exactsum.settings import ServiceSettings
from exactsum.transport import Transport


def share(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


@dataclass(frozen=True)
class ConsumerSettings(ServiceSettings):
    PROG = "python -m consumer_service"
    DESCRIPTION = ("Claim batches from the Redis queue and commit them into their run's sum, "
                   "exactly once. Runs until SIGTERM or SIGINT.")
    ENV_PREFIX = "CONSUMER"

    threads: int = option(
        4, env="CONSUMER_THREADS", type=positive_int,
        help="worker threads, each with its own claim (with --transport rq: RQ worker processes)")
    block_timeout: float = option(
        1.0, env="CONSUMER_BLOCK_TIMEOUT", type=positive_float,
        help="seconds a claim waits on an empty queue before looking again")
    heartbeat_ttl: float = option(
        5.0, env="CONSUMER_HEARTBEAT_TTL", type=positive_float,
        help="seconds after the last heartbeat when this consumer's claims may be reclaimed")
    reclaim_interval: float = option(
        1.0, env="CONSUMER_RECLAIM_INTERVAL", type=positive_float,
        help="seconds between looks for claims of dead consumers")
    grace: float = option(
        10.0, env="CONSUMER_GRACE", type=positive_float,
        help="seconds to finish in-flight batches after SIGTERM before giving them back")
    work_cpu_us: float = option(
        0.0, env="CONSUMER_WORK_CPU_US", type=non_negative_float,
        help="simulated CPU-bound work per item, in microseconds (holds the GIL)")
    work_io_ms: float = option(
        0.0, env="CONSUMER_WORK_IO_MS", type=non_negative_float,
        help="simulated I/O wait per item, in milliseconds (releases the GIL)")
    id_file: str | None = option(
        None, env="CONSUMER_ID_FILE",
        help="write this consumer's id to FILE at start (read by the health check)")
    max_attempts: int = option(
        3, env="CONSUMER_MAX_ATTEMPTS", type=positive_int,
        help="processing attempts of a batch before it goes to dead letters (with --transport "
        "rq, the producer's --rq-retries sets them for each job)")
    fail_rate: float = option(0.0, env="CONSUMER_FAIL_RATE", type=share,
                              help="share of items that always fail (poison), for tests and demos")
    flaky_rate: float = option(
        0.0, env="CONSUMER_FLAKY_RATE", type=share,
        help="share of processing attempts that fail once, for tests and demos")
    max_claim: int = option(
        64, env="CONSUMER_MAX_CLAIM", type=positive_int,
        help="most queue elements a thread claims and commits at once (small batches are "
        "claimed about 1024 items at a time, large ones one by one); 1: one at a time")
    stats_file: str | None = option(
        None, env="CONSUMER_STATS_FILE",
        help="at exit, write to FILE a JSON summary: items committed and push-to-commit latency "
        "percentiles (for benchmarks)")

    @classmethod
    def own_options(cls, transport: Transport) -> type[Options]:
        return transport.consumer_options

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_timeout + self.heartbeat_interval >= self.heartbeat_ttl:
            raise SettingsError(
                f"--block-timeout {self.block_timeout} plus the heartbeat interval "
                f"({self.heartbeat_interval:.2f} s, a third of --heartbeat-ttl) must stay below "
                f"--heartbeat-ttl {self.heartbeat_ttl}: a claim still blocked in Redis when the "
                "heartbeat lapses could land in a list that was already reclaimed")
        if self.grace >= 3600:
            raise SettingsError("--grace must be under an hour")

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
    return options.build_parser(ConsumerSettings)


def parse_settings(argv: Sequence[str] | None = None) -> ConsumerSettings:
    return options.parse(ConsumerSettings, argv)
