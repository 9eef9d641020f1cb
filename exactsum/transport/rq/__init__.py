"""The RQ transport (``--transport rq``): one RQ job per batch on an RQ queue, run by a pool of
RQ worker processes, kept exact by this project's scripts (``commit_job.lua``,
``reclaim_job.lua``...). Its modules import RQ; nothing else in the services does."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import redis

from exactsum.keys import Keys, RqKeys
from exactsum.scripts import Scripts
from exactsum.transport.base import BatchSink, ConsumerContext, ConsumerPool, Transport

if TYPE_CHECKING:
    from exactsum.transport.rq.jobs import JobOptions
    from producer_service.settings import ProducerSettings

DEFAULT_QUEUE = "exactsum"
# RQ job ids carry the key prefix, and RQ allows only these characters in them.
RQ_SAFE_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def job_options(settings: ProducerSettings) -> JobOptions:
    from exactsum.transport.rq.jobs import JobOptions

    return JobOptions(queue=settings.rq_queue, timeout_s=settings.rq_job_timeout,
                      retries=settings.rq_retries, result_ttl_s=settings.rq_result_ttl)


class RqTransport(Transport):
    name = "rq"

    def queue_key(self, keys: Keys, queue_name: str) -> str:
        return RqKeys(queue_name or DEFAULT_QUEUE).queue

    def queue_label(self, keys: Keys, queue_name: str) -> str:
        return f"RQ queue {queue_name!r}"

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
        return self.queue_key(keys, queue.decode() if queue else "")

    def own_queue(self, keys: Keys, meta: Mapping[bytes, bytes]) -> tuple[str, str] | None:
        queue = meta.get(b"rq_queue")
        if queue is None:
            return None
        return queue.decode(), self.queue_key(keys, queue.decode())

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
