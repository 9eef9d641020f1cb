"""The RQ transport (``--transport rq``): one RQ job per batch on an RQ queue, run by a pool of
RQ worker processes, kept exact by this project's scripts (``commit_job.lua``,
``reclaim_job.lua``...). Its modules import RQ (this one and ``settings`` do not: the services
load them for ``--help``); nothing else in the services does. Its options are its own
(``settings``): ``--rq-queue`` for both services, RQ's job settings for the producer."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import redis

from exactsum.keys import Keys, RqKeys
from exactsum.options import Options
from exactsum.scripts import Scripts
from exactsum.transport.base import BatchSink, ConsumerContext, ConsumerPool, Transport
from exactsum.transport.rq.settings import (
    DEFAULT_QUEUE,
    RqProducerSettings,
    RqSettings,
    rq_producer_settings,
    rq_settings,
)

if TYPE_CHECKING:
    from exactsum.transport.rq.jobs import JobOptions
    from producer_service.settings import ProducerSettings

__all__ = ["DEFAULT_QUEUE", "TRANSPORT", "RqTransport", "job_options"]

# RQ job ids carry the key prefix, and RQ allows only these characters in them.
RQ_SAFE_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def job_options(settings: ProducerSettings) -> JobOptions:
    """How the producer enqueues, from its RQ options."""
    from exactsum.transport.rq.jobs import JobOptions

    own = rq_producer_settings(settings.transport_options)
    return JobOptions(queue=own.rq_queue, timeout_s=own.rq_job_timeout,
                      retries=own.rq_retries, result_ttl_s=own.rq_result_ttl)


class RqTransport(Transport):
    name = "rq"
    consumer_options = RqSettings
    producer_options = RqProducerSettings

    def queue_key(self, keys: Keys, options: Options) -> str:
        return RqKeys(rq_settings(options).rq_queue).queue

    def queue_label(self, keys: Keys, options: Options) -> str:
        return f"RQ queue {rq_settings(options).rq_queue!r}"

    def missing(self) -> str | None:
        if importlib.util.find_spec("rq") is None:
            return "the RQ transport needs RQ: pip install 'exactsum[rq]'"
        return None

    def prefix_problem(self, prefix: str) -> str | None:
        if RQ_SAFE_RE.match(prefix):
            return None
        return ("with --transport rq a key prefix is made of letters, digits, '_' and '-' only "
                "(it is part of RQ job ids)")

    def cluster_problem(self) -> str | None:
        return ("RQ's keys cannot be put in one hash slot per job (CROSSSLOT), so RQ cannot run "
                "on Redis Cluster")

    def run_meta(self, settings: ProducerSettings) -> dict[str, str | int]:
        return job_options(settings).as_meta()

    def queue_of_run(self, keys: Keys, meta: Mapping[bytes, bytes]) -> str:
        queue = meta.get(b"rq_queue")
        return RqKeys(queue.decode() if queue else DEFAULT_QUEUE).queue

    def own_queue(self, keys: Keys, meta: Mapping[bytes, bytes]) -> tuple[str, str] | None:
        queue = meta.get(b"rq_queue")
        if queue is None:
            return None
        return queue.decode(), RqKeys(queue.decode()).queue

    def requeue_dead(self, client: redis.Redis, keys: Keys, scripts: Scripts, run_id: str,
                     meta: Mapping[bytes, bytes], raw: bytes, element: bytes, seq: int,
                     count: int) -> bool:
        from exactsum.replication import replication_of
        from exactsum.transport.rq.requeue import requeue_dead

        return requeue_dead(client, keys, run_id, meta, raw, element, seq, count,
                            replication_of(scripts.requeue_dead))

    def sink(self, client: redis.Redis, keys: Keys, scripts: Scripts, run_id: str, bound: int,
             settings: ProducerSettings, epoch: int) -> BatchSink:
        from exactsum.transport.rq.sink import RqSink

        return RqSink(client, keys, run_id, bound, job_options(settings), epoch,
                      settings.replication)

    def pool(self, context: ConsumerContext) -> ConsumerPool:
        from exactsum.transport.rq.pool import RqPool

        return RqPool(context)


TRANSPORT = RqTransport()
