"""The RQ transport's own options, declared here rather than in the services' settings: the
services' command lines take every transport's options (:meth:`Transport.consumer_options
<exactsum.transport.base.Transport>`), and the transport picked gets an object of its class
(``settings.transport_options``). No RQ import here: ``--help`` lists these options without it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from exactsum.options import Options, non_negative_int, option, positive_int

DEFAULT_QUEUE = "exactsum"


def rq_queue_name(text: str) -> str:
    if not text or any(c in text for c in ":,") or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: an RQ queue name is non-empty, without ':', ',' or spaces"
        )
    return text


@dataclass(frozen=True)
class RqSettings(Options):
    """What both services take with ``--transport rq``: the queue they meet on."""

    # The variables keep the names compose files and deployments use (RQ_QUEUE,
    # PRODUCER_RQ_*), so they are spelled out rather than built from a prefix.
    rq_queue: str = option(DEFAULT_QUEUE, env="RQ_QUEUE", type=rq_queue_name, tail=True,
                           help="the RQ queue's name (with --transport rq)")


@dataclass(frozen=True)
class RqProducerSettings(RqSettings):
    """The producer's: RQ's settings of each job it enqueues (recorded in the run's meta)."""

    rq_job_timeout: int = option(
        60, env="PRODUCER_RQ_JOB_TIMEOUT", type=positive_int, tail=True,
        help="with --transport rq: seconds RQ lets a job run before it kills it")
    rq_retries: int = option(
        2, env="PRODUCER_RQ_RETRIES", type=non_negative_int, tail=True,
        help="with --transport rq: times RQ retries a job that fails or whose worker dies, "
        "before its batch is dead-lettered")
    rq_result_ttl: int = option(
        600, env="PRODUCER_RQ_RESULT_TTL", type=positive_int, tail=True,
        help="with --transport rq: seconds RQ keeps a finished job's record and result (about "
        "6 KB each; for rq-dashboard)")


def rq_settings(options: Options) -> RqSettings:
    """A service's ``transport_options`` when the RQ transport was picked (the services'
    settings check the class; this tells mypy, and catches a caller that passed another's)."""
    if not isinstance(options, RqSettings):
        raise TypeError(f"the RQ transport was given {type(options).__name__}, not RqSettings")
    return options


def rq_producer_settings(options: Options) -> RqProducerSettings:
    """The producer's ``transport_options`` when the RQ transport was picked."""
    if not isinstance(options, RqProducerSettings):
        raise TypeError(f"the RQ transport was given {type(options).__name__}, not "
                        "RqProducerSettings")
    return options
