"""What the producer and the consumers agree on about RQ jobs (the RQ transport).

One job per batch. Its id names the batch (:func:`exactsum.keys.job_id`), so re-sending an
enqueue cannot make a second job; it calls :data:`JOB_FUNCTION` with the run id and the batch
number. The batch's numbers are not in the job: they wait in the run's ``batches`` hash from the
push until the batch is counted or dead-lettered, and the scripts that resolve a batch remove
them in the same step. RQ deletes a job's record ``result_ttl`` seconds after *an* execution of
it ends, and an execution of a job that had been put back can end while its copy still waits in
the queue; keeping the numbers in a key that only resolution removes means no timing of RQ's
bookkeeping can lose them; and a batch left without a job (its record expired or deleted) is
given a new one by the consumers' reclaimer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from redis.client import Pipeline
from rq import Queue, Retry
from rq.queue import EnqueueData

from exactsum.keys import job_id
from exactsum.transport.rq import DEFAULT_QUEUE

# Imported by the RQ worker by name; the producer never imports the consumer's code.
JOB_FUNCTION = "exactsum.transport.rq.job.count_batch"


@dataclass(frozen=True)
class JobOptions:
    """How the producer enqueues: the RQ queue and RQ's own job settings. The producer records
    them in the run's meta (:meth:`as_meta`), so that whoever enqueues a job of the run again
    (the consumers' reclaimer, ``admin dead requeue``) enqueues it the same way."""

    queue: str = DEFAULT_QUEUE
    timeout_s: int = 60
    # RQ retries a job that raises (and our reclaimer one whose worker died) this many times
    # before its batch is dead-lettered.
    retries: int = 2
    # How long RQ keeps a finished or failed job's record and result (about 6 KB a job), for
    # rq-dashboard. The numbers are elsewhere, and a batch whose job record is gone before it
    # was resolved gets a new job (the reclaimer's orphan pass), so this bounds only memory and
    # what the dashboard can show.
    result_ttl_s: int = 600

    def as_meta(self) -> dict[str, str | int]:
        return {"rq_queue": self.queue, "rq_timeout_s": self.timeout_s,
                "rq_retries": self.retries, "rq_result_ttl_s": self.result_ttl_s}

    @classmethod
    def from_meta(cls, meta: Mapping[bytes, bytes]) -> JobOptions:
        """The options recorded in a run's meta; defaults for any that are missing."""
        default = cls()

        def get(name: str, fallback: int) -> int:
            raw = meta.get(name.encode())
            return int(raw) if raw is not None else fallback

        queue = meta.get(b"rq_queue")
        return cls(queue=queue.decode() if queue else default.queue,
                   timeout_s=get("rq_timeout_s", default.timeout_s),
                   retries=get("rq_retries", default.retries),
                   result_ttl_s=get("rq_result_ttl_s", default.result_ttl_s))


def job_data(prefix: str, run_id: str, seq: int, items: int, options: JobOptions) -> EnqueueData:
    return Queue.prepare_data(
        JOB_FUNCTION,
        args=(run_id, seq),
        job_id=job_id(prefix, run_id, seq),
        description=f"batch {seq} of run {run_id}: {items} numbers",
        timeout=options.timeout_s,
        # A job waits as long as it must: the run's deadline is the producer's business.
        ttl=None,
        result_ttl=options.result_ttl_s,
        failure_ttl=options.result_ttl_s,
        retry=Retry(max=options.retries) if options.retries else None,
    )


def enqueue_jobs(queue: Queue, pipeline: Pipeline, prefix: str, run_id: str,
                 batches: Iterable[tuple[int, int]], options: JobOptions) -> None:
    """Add one job per ``(batch number, items)`` to ``pipeline``, a MULTI the caller executes
    with its own writes (the producer's push, admin's requeue, the reclaimer's new jobs)."""
    queue.enqueue_many([job_data(prefix, run_id, seq, items, options) for seq, items in batches],
                       pipeline=pipeline)
