"""The RQ job of the RQ transport: count one batch into its run's sum, exactly once.

RQ runs :func:`count_batch` with the run id and the batch number (``jobs``). The job reads
the batch's element and lease, computes the batch's sum, and commits it through
``commit_job.lua``, which counts a batch once whatever RQ does: a job that RQ runs twice (put
back after its worker was declared dead, retried after an error, re-sent after a lost reply)
finds its batch counted or its lease moved on, and counts nothing.

A batch that fails processing raises :class:`BatchFailed`, and RQ retries the job while it has
retries left (the producer's ``--rq-retries``); on the last attempt the job dead-letters the
batch itself, with the reasons, instead of raising: RQ's failed registry is not where the audit
looks. Redis errors are retried here with backoff, within the job's RQ timeout.

With ``--min-replicas N`` (Redis Sentinel, docs/sentinel.md) the commit and the dead letter are
acknowledged like the native transport's: each script call is followed by ``WAIT`` on its
connection, and one that too few replicas acknowledged is sent again (every script is safe to
re-send). The ``WAIT`` covers every earlier write of the primary too, RQ's taking of the job
among them.

The consumer service's worker processes set the job's context up (:func:`install`); a plain
``rq worker`` started by hand builds it from the environment (``REDIS_URL``, ``KEY_PREFIX``,
``MIN_REPLICAS``, ``REPLICA_TIMEOUT``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import redis
from rq import get_current_job

from exactsum import counters
from exactsum.audit import dead_letter_entry
from exactsum.cluster import register_scripts
from exactsum.connection import make_client, retrying
from exactsum.counters import Event
from exactsum.keys import Keys, RunKeys
from exactsum.logs import bind_run
from exactsum.protocol import ForeignElement, decode
from exactsum.replication import NO_REPLICATION, Replication
from exactsum.scripts import Commit, DeadLetter, Scripts
from exactsum.transport.failures import FailureInjector
from exactsum.transport.work import simulate_work

log = logging.getLogger("consumer.rq_job")


class BatchFailed(Exception):
    """Processing the batch failed this time; RQ retries the job while it has retries left."""


@dataclass
class JobContext:
    client: redis.Redis
    keys: Keys
    consumer_id: str
    failures: FailureInjector = field(default_factory=FailureInjector)
    work_cpu_us: float = 0.0
    work_io_ms: float = 0.0
    replication: Replication = NO_REPLICATION
    scripts: Scripts = field(init=False)

    def __post_init__(self) -> None:
        self.scripts = register_scripts(self.client,
                                        min_replicas=self.replication.min_replicas,
                                        replica_timeout=self.replication.timeout_s)


_context: JobContext | None = None


def install(context: JobContext) -> None:
    global _context
    _context = context


def _current(worker_name: str) -> JobContext:
    global _context
    if _context is None:
        _context = JobContext(
            make_client(os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
                        socket_timeout=10.0, name=worker_name or "rq-job"),
            Keys(os.environ.get("KEY_PREFIX", Keys().prefix)),
            consumer_id=worker_name or "rq",
            replication=Replication(int(os.environ.get("MIN_REPLICAS", "0")),
                                    float(os.environ.get("REPLICA_TIMEOUT",
                                                         NO_REPLICATION.timeout_s))),
        )
    return _context


def count_batch(run_id: str, seq: int) -> str:
    """Count batch ``seq`` of run ``run_id``; returns what happened, which RQ keeps as the
    job's result (shown by rq-dashboard)."""
    job = get_current_job()
    ctx = _current((job.worker_name or "") if job is not None else "")
    bind_run(run_id)
    rk = ctx.keys.run(run_id)
    element, lease = retrying(lambda: _read(ctx.client, rk, seq), "read batch", log)
    if element is None:
        return "already resolved"
    try:
        batch = decode(element)
    except ForeignElement as exc:
        return _dead_letter(ctx, run_id, element, seq, 0, lease, f"unreadable batch: {exc}", 1)
    if ctx.failures.active:
        reasons = ctx.failures.failures(batch)
        if reasons:
            attempts = int(retrying(lambda: ctx.client.hincrby(rk.attempts, str(seq), 1),
                                    "count attempt", log))
            summary = "; ".join(reasons[:5]) + (
                f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
            if job is not None and job.retries_left:
                counters.incr(Event.BATCH_RETRIED)
                log.warning("batch %s/%d failed (attempt %d, %d retries left): %s", run_id,
                            seq, attempts, job.retries_left, summary)
                raise BatchFailed(summary)
            return _dead_letter(ctx, run_id, element, seq, batch.count, lease,
                                f"{summary} (after {attempts} attempts)", attempts)
    simulate_work(batch.count, ctx.work_cpu_us, ctx.work_io_ms)
    status = Commit(int(retrying(
        lambda: ctx.scripts.commit_job(
            keys=[rk.meta, rk.done, rk.sum, rk.committed, rk.by_consumer, rk.stale, rk.batches,
                  rk.leases],
            args=[ctx.consumer_id, seq, batch.count, batch.total, lease],
        ),
        "commit", log,
    )))
    if status == Commit.COUNTED:
        return f"counted {batch.count} items, sum {batch.total}"
    if status == Commit.ALREADY_COUNTED:
        counters.incr(Event.COMMIT_ALREADY_COUNTED)
        log.info("batch %s/%d was already resolved; not counted again", run_id, seq)
        return "already resolved"
    if status == Commit.FENCED:
        counters.incr(Event.COMMIT_FENCED)
        log.warning("batch %s/%d: this job was put back while its worker seemed dead; the "
                    "execution holding the new lease counts it", run_id, seq)
        return "fenced"
    if status == Commit.UNKNOWN_RUN:
        return _dead_letter(ctx, run_id, element, seq, batch.count, lease,
                            f"run {run_id!r} is unknown or expired", 1)
    return _dead_letter(ctx, run_id, element, seq, batch.count, lease,
                        "the run's sum would leave signed 64 bits", 1)


def _read(client: redis.Redis, rk: RunKeys, seq: int) -> tuple[bytes | None, str]:
    """The batch's element and lease, read together (one transaction)."""
    pipe = client.pipeline(transaction=True)
    pipe.hget(rk.batches, str(seq))
    pipe.hget(rk.leases, str(seq))
    element, lease = pipe.execute()
    return element, (lease or b"0").decode()


def _dead_letter(ctx: JobContext, run_id: str, element: bytes, seq: int, items: int,
                 lease: str, reason: str, attempts: int) -> str:
    rk = ctx.keys.run(run_id)
    entry = dead_letter_entry(element, reason, ctx.consumer_id, run=run_id, seq=seq,
                              items=items, attempts=attempts)
    status = DeadLetter(int(retrying(
        lambda: ctx.scripts.dead_letter_job(
            keys=[rk.done, rk.dead, rk.dead_items, rk.batches, rk.leases],
            args=[seq, items, entry, lease],
        ),
        "dead-letter", log,
    )))
    if status == DeadLetter.DEAD_LETTERED:
        counters.incr(Event.BATCH_DEAD_LETTERED)
        log.error("batch %s/%d (%d items) dead-lettered: %s", run_id, seq, items, reason)
        return f"dead-lettered: {reason}"
    return "already resolved" if status == DeadLetter.ALREADY_RESOLVED else "fenced"
