"""The producer's settings: a frozen dataclass whose fields are its options
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
    int_value,
    non_negative_float,
    non_negative_int,
    option,
    positive_float,
    positive_int,
)
from exactsum.protocol import RUN_ID_RE
from exactsum.settings import ServiceSettings
from exactsum.transport import Transport


def run_id(text: str) -> str:
    if not RUN_ID_RE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a run id is 1-64 of A-Z a-z 0-9 _ -")
    return text


@dataclass(frozen=True)
class ProducerSettings(ServiceSettings):
    PROG = "python -m producer_service"
    DESCRIPTION = (
        "Push numbers onto the Redis queue, wait for the consumers, and print a verified report. "
        "An existing --run-id with the same source is resumed (docs/producer.md). Exit status: "
        "0 exact, 1 not verified (lost, doubled, timed out, or interrupted: resume it), 2 bad "
        "usage or input, or a resume refused (nothing pushed), 3 nothing lost or doubled but "
        "some items dead-lettered, 4 fenced: another producer resumed the run, 5 a stream "
        "stopped at a bad line (the lines before it counted exactly).")
    ENV_PREFIX = "PRODUCER"

    threads: int = option(2, env="PRODUCER_THREADS", type=positive_int,
                          help="threads pushing batches")
    batch: int = option(1000, env="PRODUCER_BATCH", type=positive_int,
                        help="items per queue element")
    count: int = option(100_000, env="PRODUCER_COUNT", type=non_negative_int,
                        help="random integers to produce (ignored with --input)")
    min: int = option(1, env="PRODUCER_MIN", type=int_value, help="smallest random integer")
    max: int = option(11, env="PRODUCER_MAX", type=int_value, help="largest random integer")
    seed: int | None = option(None, env="PRODUCER_SEED", type=int_value,
                              help="seed of the random integers, for a reproducible run")
    input: str | None = option(
        None, env="PRODUCER_INPUT",
        help="read one integer per line from FILE instead ('-' is stdin: streamed as it arrives "
        "from a pipe; a first SIGTERM ends the input there)")
    max_queue: int = option(1_000_000, env="PRODUCER_MAX_QUEUE", type=non_negative_int,
                            help="wait while the queue holds this many items (0: unbounded)")
    run_id: str | None = option(
        None, env="PRODUCER_RUN_ID", type=run_id,
        help="name of this run (default: a fresh random id); the id of an unfinished run, with "
        "the same source, resumes it")
    timeout: float = option(
        600.0, env="PRODUCER_TIMEOUT", type=positive_float,
        help="seconds to wait for the run to finish before reporting it unverified")
    retention: int = option(86_400, env="PRODUCER_RETENTION", type=positive_int,
                            help="seconds a finished run's keys are kept")
    progress_interval: float = option(1.0, env="PRODUCER_PROGRESS_INTERVAL",
                                      type=positive_float,
                                      help="seconds between progress reports")
    rate: float = option(
        0.0, env="PRODUCER_RATE", type=non_negative_float,
        help="push at most this many items per second, one batch at a time (0: as fast as "
        "possible); for latency measurements")
    validate_only: bool = option(
        False, env="PRODUCER_VALIDATE_ONLY",
        help="read the input, check every line and print its item count, sum and fingerprint; "
        "push nothing (no Redis needed)")
    json: bool = option(False, env="PRODUCER_JSON",
                        help="print the report as one JSON object on the last line of stdout")
    partitions: int = option(
        0, env="PRODUCER_PARTITIONS", type=non_negative_int,
        help="with --redis-cluster: partitions the run is split into, batch n going to "
        "partition n mod P (0: two per primary of the cluster)")

    @classmethod
    def own_options(cls, transport: Transport) -> type[Options]:
        return transport.producer_options

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min > self.max:
            raise SettingsError(f"--min {self.min} is greater than --max {self.max}")


def build_parser() -> EnvParser:
    return options.build_parser(ProducerSettings)


def parse_settings(argv: Sequence[str] | None = None) -> ProducerSettings:
    return options.parse(ProducerSettings, argv)
