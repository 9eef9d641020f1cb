"""The producer's settings: a frozen dataclass built from the command line and the environment."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from exactsum.connection import RedisTarget
from exactsum.options import (
    EnvParser,
    int_value,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from exactsum.protocol import RUN_ID_RE
from exactsum.replication import Replication


def run_id(text: str) -> str:
    if not RUN_ID_RE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a run id is 1-64 of A-Z a-z 0-9 _ -")
    return text


@dataclass(frozen=True)
class ProducerSettings:
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
    batch: int
    count: int
    min: int
    max: int
    seed: int | None
    input: str | None
    max_queue: int
    run_id: str | None
    timeout: float
    retention: int
    json: bool
    progress_interval: float
    rate: float
    metrics_port: int
    metrics_addr: str
    transport: str
    rq_queue: str
    partitions: int
    rq_job_timeout: int
    rq_retries: int
    rq_result_ttl: int
    validate_only: bool
    counters_file: str | None = None

    @property
    def redis(self) -> RedisTarget:
        return RedisTarget(self.redis_url, self.redis_sentinels or (), self.redis_sentinel_master,
                           self.redis_cluster)

    @property
    def replication(self) -> Replication:
        return Replication(self.min_replicas, self.replica_timeout)


def build_parser() -> EnvParser:
    parser = EnvParser(
        prog="python -m producer_service",
        description="Push numbers onto the Redis queue, wait for the consumers, and print a "
        "verified report. An existing --run-id with the same source is resumed (docs/producer.md). "
        "Exit status: 0 exact, 1 not verified (lost, doubled, timed out, or interrupted: resume "
        "it), 2 bad usage or input, or a resume refused (nothing pushed), 3 nothing lost or "
        "doubled but some items dead-lettered, 4 fenced: another producer resumed the run, "
        "5 a stream stopped at a bad line (the lines before it counted exactly).",
    )
    parser.add_common_options()
    add = parser.add_env_option
    add("--threads", env="PRODUCER_THREADS", default=2, type=positive_int,
        help="threads pushing batches")
    add("--batch", env="PRODUCER_BATCH", default=1000, type=positive_int,
        help="items per queue element")
    add("--count", env="PRODUCER_COUNT", default=100_000, type=non_negative_int,
        help="random integers to produce (ignored with --input)")
    add("--min", env="PRODUCER_MIN", default=1, type=int_value, help="smallest random integer")
    add("--max", env="PRODUCER_MAX", default=11, type=int_value, help="largest random integer")
    add("--seed", env="PRODUCER_SEED", default=None, type=int_value,
        help="seed of the random integers, for a reproducible run")
    add("--input", env="PRODUCER_INPUT", default=None,
        help="read one integer per line from FILE instead ('-' is stdin: streamed as it "
        "arrives from a pipe; a first SIGTERM ends the input there)")
    add("--max-queue", env="PRODUCER_MAX_QUEUE", default=1_000_000, type=non_negative_int,
        help="wait while the queue holds this many items (0: unbounded)")
    add("--run-id", env="PRODUCER_RUN_ID", default=None, type=run_id,
        help="name of this run (default: a fresh random id); the id of an unfinished run, "
        "with the same source, resumes it")
    add("--timeout", env="PRODUCER_TIMEOUT", default=600.0, type=positive_float,
        help="seconds to wait for the run to finish before reporting it unverified")
    add("--retention", env="PRODUCER_RETENTION", default=86_400, type=positive_int,
        help="seconds a finished run's keys are kept")
    add("--progress-interval", env="PRODUCER_PROGRESS_INTERVAL", default=1.0,
        type=positive_float, help="seconds between progress reports")
    add("--rate", env="PRODUCER_RATE", default=0.0, type=non_negative_float,
        help="push at most this many items per second, one batch at a time (0: as fast as "
        "possible); for latency measurements")
    parser.add_env_flag("--validate-only", env="PRODUCER_VALIDATE_ONLY",
                        help="read the input, check every line and print its item count, sum "
                        "and fingerprint; push nothing (no Redis needed)")
    parser.add_env_flag("--json", env="PRODUCER_JSON",
                        help="print the report as one JSON object on the last line of stdout")
    add("--partitions", env="PRODUCER_PARTITIONS", default=0, type=non_negative_int,
        help="with --redis-cluster: partitions the run is split into, batch n going to "
        "partition n mod P (0: two per primary of the cluster)")
    add("--counters-file", env="PRODUCER_COUNTERS_FILE", default=None,
        help="keep in FILE, as JSON, counts of what happened (retries, fenced commits, "
        "reclaims, ...; docs/counters.md), rewritten within 0.1 s of each and at exit")
    parser.add_metrics_options("PRODUCER_METRICS_PORT")
    parser.add_transport_options()
    add("--rq-job-timeout", env="PRODUCER_RQ_JOB_TIMEOUT", default=60, type=positive_int,
        help="with --transport rq: seconds RQ lets a job run before it kills it")
    add("--rq-retries", env="PRODUCER_RQ_RETRIES", default=2, type=non_negative_int,
        help="with --transport rq: times RQ retries a job that fails or whose worker dies, "
        "before its batch is dead-lettered")
    add("--rq-result-ttl", env="PRODUCER_RQ_RESULT_TTL", default=600, type=positive_int,
        help="with --transport rq: seconds RQ keeps a finished job's record and result "
        "(about 6 KB each; for rq-dashboard)")
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> ProducerSettings:
    parser = build_parser()
    args = parser.parse_args(argv)
    parser.check_transport(args.transport, args.key_prefix)
    parser.check_cluster(args.redis_cluster, args.transport)
    if args.min > args.max:
        parser.error(f"--min {args.min} is greater than --max {args.max}")
    return ProducerSettings(**vars(args))
