"""The RQ transport's reclaimer: puts back jobs of dead RQ workers, and dead-letters the batches
of jobs that RQ failed by itself. Every consumer service in RQ mode runs one.

RQ alone notices a dead worker late: an execution stays in RQ's StartedJobRegistry until its
entry expires (the job's timeout plus a minute), and only then does RQ's maintenance retry the
job. Here a worker is dead when its consumer service says so (the process exited), when the
consumer service that ran it has no heartbeat, or, for a worker that no consumer service runs
(a plain ``rq worker``), when RQ's own worker key is gone. Its executions go through
``reclaim_job.lua``: back on RQ's queue with one retry fewer and a new lease, or dead-lettered
when no retry is left.

A job id that a worker took from RQ's queue but never recorded as started (its connection
dropped in between: a Redis restart does it) is moved back after a few seconds, where RQ's own
maintenance would wait a minute and count a failed attempt.

A batch left without a job (RQ expired or an operator deleted its job's record before the batch
was resolved) is enqueued anew once its run has stalled.

A job that RQ itself moved to its FailedJobRegistry (its timeout killed it, or RQ's maintenance
gave up on it) has a batch that nobody will count; it is dead-lettered here with RQ's reason.
The job's own failures never get there unresolved: on its last attempt it dead-letters itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import cast

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from exactsum import counters
from exactsum.audit import dead_letter_entry
from exactsum.connection import RetryAborted, retrying
from exactsum.counters import Event
from exactsum.keys import Keys, PoolWorkerName, RqKeys, parse_job_id
from exactsum.keys import job_id as make_job_id
from exactsum.protocol import ForeignElement, decode
from exactsum.replication import replication_of
from exactsum.retention import expire_finished_runs
from exactsum.runs import FINAL_STATES
from exactsum.scripts import DeadLetter, Moved, ReclaimJob, Scripts
from exactsum.transport.rq.jobs import JobOptions, enqueue_jobs

log = logging.getLogger("consumer.rq_reclaimer")

# An id that stayed this long in RQ's intermediate queue without being started is stranded.
STRANDED_AFTER_S = 5.0


class RqReclaimer(threading.Thread):
    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: Scripts, consumer_id: str,
        queue_name: str, *, interval: float, is_dead_here: Callable[[str], bool | None],
    ) -> None:
        super().__init__(name="rq-reclaimer", daemon=True)
        self.client, self.keys, self.scripts = client, keys, scripts
        self.rq = RqKeys(queue_name)
        self.consumer_id = consumer_id
        self.interval = interval
        # For our own workers: True dead, False alive, None not ours.
        self.is_dead_here = is_dead_here
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._settled_failed: set[str] = set()
        self._stranded: dict[str, float] = {}
        self._progress: dict[str, tuple[int, float]] = {}
        self.stalled_after = 10 * interval
        self._next_retention = 0.0

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(self.interval)
            self.wake.clear()
            if self.stopping.is_set():
                return
            try:
                retrying(self.sweep, "rq reclaim sweep", log, stop=self.stopping,
                         cap=self.interval)
            except RetryAborted:
                return

    def sweep(self) -> int:
        """One pass; returns the jobs put back, enqueued anew or dead-lettered."""
        handled = (self.reclaim_dead_workers() + self.rescue_stranded() + self.settle_failed()
                   + self.requeue_orphans())
        now = time.monotonic()
        if now >= self._next_retention:
            expire_finished_runs(self.client, self.keys)
            self._next_retention = now + 10 * self.interval
        return handled

    # -- executions of dead workers --------------------------------------------------------

    def reclaim_dead_workers(self) -> int:
        members = [m.decode() for m in
                   cast(list[bytes], self.client.zrange(self.rq.started, 0, -1))]
        if not members:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.hget(self.rq.execution(member), "worker_name")
        workers = [(w or b"").decode() for w in pipe.execute()]
        dead = self._dead({w for w in workers if w})
        handled = 0
        for member, worker in zip(members, workers, strict=True):
            if worker in dead:
                handled += self._reclaim(member, worker)
        return handled

    def _dead(self, workers: set[str]) -> set[str]:
        dead, ask = set(), []
        for worker in workers:
            here = self.is_dead_here(worker)
            if here is not None:
                if here:
                    dead.add(worker)
                continue
            # A pool worker lives while its consumer service does; a plain ``rq worker``, while
            # RQ's worker key does.
            name = PoolWorkerName.parse(worker)
            ask.append((worker, self.keys.heartbeat(name.consumer) if name
                        else RqKeys.worker(worker)))
        if ask:
            pipe = self.client.pipeline(transaction=False)
            for _, key in ask:
                pipe.exists(key)
            dead |= {w for (w, _), alive in zip(ask, pipe.execute(), strict=True) if not alive}
        return dead

    def _reclaim(self, member: str, worker: str) -> int:
        job_id = member.rsplit(":", 1)[0]
        parsed = parse_job_id(self.keys.prefix, job_id)
        if parsed is None:
            return 0  # not one of ours: RQ's maintenance deals with it
        run_id, seq = parsed
        rk = self.keys.run(run_id)
        element = cast(bytes | None, self.client.hget(rk.batches, str(seq))) or b""
        items = _items(element)
        entry = dead_letter_entry(
            element, f"its RQ worker {worker} died during the job, and the job had no retries "
            "left", self.consumer_id, run=run_id, seq=seq, items=items, attempts=1)
        reply, lease = self.scripts.reclaim_job(
            keys=[self.rq.started, self.rq.queue, RqKeys.job(job_id), rk.done, rk.leases,
                  rk.batches, rk.dead, rk.dead_items, self.keys.reclaimed],
            args=[member, job_id, seq, items, entry],
        )
        status = ReclaimJob(int(reply))
        if status == ReclaimJob.REQUEUED:
            counters.incr(Event.RQ_JOBS_PUT_BACK)
            log.warning("job %s: its worker %s is dead; put back on the queue (lease %s)",
                        job_id, worker, lease)
        elif status == ReclaimJob.DEAD_LETTERED:
            counters.incr(Event.BATCH_DEAD_LETTERED)
            log.error("job %s: its worker %s is dead and it has no retries left; its batch "
                      "(%d items) is dead-lettered", job_id, worker, items)
        return 0 if status == ReclaimJob.NOTHING else 1

    # -- job ids stranded between taken and started ------------------------------------------

    def rescue_stranded(self) -> int:
        """Move back ids that stayed in RQ's intermediate queue, not started, for longer than
        ``STRANDED_AFTER_S`` (a live worker moves them on within milliseconds)."""
        ids = {i.decode() for i in
               cast(list[bytes], self.client.lrange(self.rq.intermediate, 0, -1))}
        now = time.monotonic()
        self._stranded = {i: self._stranded.get(i, now) for i in ids
                          if parse_job_id(self.keys.prefix, i) is not None}
        overdue = [i for i, seen in self._stranded.items() if now - seen >= STRANDED_AFTER_S]
        if not overdue:
            return 0
        started = {m.decode().rsplit(":", 1)[0] for m in
                   cast(list[bytes], self.client.zrange(self.rq.started, 0, -1))}
        rescued = 0
        for job_id in overdue:
            if job_id in started:
                continue
            if Moved(int(self.scripts.rescue_job(
                    keys=[self.rq.intermediate, self.rq.queue, self.rq.first_seen(job_id)],
                    args=[job_id]))) == Moved.MOVED:
                rescued += 1
                log.warning("job %s was stranded in RQ's intermediate queue (taken by a "
                            "worker, never started); put back on the queue", job_id)
            self._stranded.pop(job_id, None)
        return rescued

    # -- batches left without a job --------------------------------------------------------

    def requeue_orphans(self) -> int:
        """Give a new job to each unresolved batch whose RQ job record is gone, in runs on our
        RQ queue that have made no progress for ``10 x interval``.

        RQ expires a job's record ``result_ttl`` after an execution of it ends, also when that
        was a late execution of a job already put back and waiting again, and RQ drops a
        waiting id whose record is gone. An operator can delete jobs or empty the queue too.
        The batch's numbers are still in the run's ``batches`` hash, so it gets a new job. Only
        stalled runs are looked at: while a run moves, its batches are being resolved.
        """
        now = time.monotonic()
        run_ids = [r.decode() for r in
                   cast(list[bytes], self.client.zrange(self.keys.runs, 0, -1))]
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            rk = self.keys.run(run_id)
            pipe.hgetall(rk.meta)
            pipe.get(rk.committed)
            pipe.get(rk.dead_items)
        replies = pipe.execute()
        seen, handled = set(), 0
        for index, run_id in enumerate(run_ids):
            meta, committed, dead = replies[3 * index: 3 * index + 3]
            if (meta.get(b"transport") != b"rq"
                    or meta.get(b"state", b"").decode() in FINAL_STATES
                    or JobOptions.from_meta(meta).queue != self.rq.queue_name):
                continue
            seen.add(run_id)
            resolved = int(committed or 0) + int(dead or 0)
            last = self._progress.get(run_id)
            if last is None or last[0] != resolved:
                self._progress[run_id] = (resolved, now)
            elif now - last[1] >= self.stalled_after:
                self._progress[run_id] = (resolved, now)  # look again after another stall
                handled += self._requeue_orphans_of(run_id, JobOptions.from_meta(meta))
        self._progress = {k: v for k, v in self._progress.items() if k in seen}
        return handled

    def _requeue_orphans_of(self, run_id: str, options: JobOptions) -> int:
        rk = self.keys.run(run_id)
        unresolved = [(int(seq), element) for seq, element in
                      cast(Iterator[tuple[bytes, bytes]],
                           self.client.hscan_iter(rk.batches, count=1000))]
        pipe = self.client.pipeline(transaction=False)
        for seq, _ in unresolved:
            pipe.exists(RqKeys.job(make_job_id(self.keys.prefix, run_id, seq)))
        orphans = [(seq, element) for (seq, element), exists
                   in zip(unresolved, pipe.execute(), strict=True) if not exists]
        if not orphans:
            return 0
        tx = self.client.pipeline(transaction=True)
        enqueue_jobs(Queue(options.queue, connection=self.client), tx, self.keys.prefix, run_id,
                     ((seq, _items(element)) for seq, element in orphans), options)
        tx.execute()
        counters.incr(Event.RQ_ORPHANS_REQUEUED, len(orphans))
        # With --min-replicas, on the replicas before it counts as done (a failover that lost
        # it leaves the batches without a job again, and the next stalled pass finds them).
        replication_of(self.scripts.reclaim_job).barrier(self.client, rk.acks)
        log.warning("run %s: %d unresolved batches had no RQ job any more (their records "
                    "expired or were deleted); enqueued anew: %s", run_id, len(orphans),
                    ", ".join(str(seq) for seq, _ in orphans[:10])
                    + (" ..." if len(orphans) > 10 else ""))
        return len(orphans)

    # -- jobs RQ failed by itself ----------------------------------------------------------

    def settle_failed(self) -> int:
        ids = [i.decode() for i in cast(list[bytes], self.client.zrange(self.rq.failed, 0, -1))]
        fresh = [(i, p) for i in ids if i not in self._settled_failed
                 and (p := parse_job_id(self.keys.prefix, i)) is not None]
        if not fresh:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for _, (run_id, seq) in fresh:
            rk = self.keys.run(run_id)
            pipe.hget(rk.batches, str(seq))
            pipe.hget(rk.leases, str(seq))
        replies = pipe.execute()
        handled = 0
        for index, (job_id, (run_id, seq)) in enumerate(fresh):
            element, lease = replies[2 * index], replies[2 * index + 1]
            if element is not None:
                handled += self._dead_letter_failed(job_id, run_id, seq, element,
                                                    (lease or b"0").decode())
            self._settled_failed.add(job_id)
        if len(self._settled_failed) > 100_000:
            self._settled_failed.clear()
        return handled

    def _dead_letter_failed(self, job_id: str, run_id: str, seq: int, element: bytes,
                            lease: str) -> int:
        rk = self.keys.run(run_id)
        reason = "RQ failed the job"
        try:
            result = Job.fetch(job_id, connection=self.client).latest_result()
            if result is not None and result.exc_string:
                reason = f"RQ failed the job: {result.exc_string.strip().splitlines()[-1]}"
        except NoSuchJobError:
            pass
        items = _items(element)
        entry = dead_letter_entry(element, reason, self.consumer_id, run=run_id, seq=seq,
                                  items=items, attempts=1)
        status = DeadLetter(int(self.scripts.dead_letter_job(
            keys=[rk.done, rk.dead, rk.dead_items, rk.batches, rk.leases],
            args=[seq, items, entry, lease],
        )))
        if status == DeadLetter.DEAD_LETTERED:
            log.error("job %s: %s; its batch (%d items) is dead-lettered", job_id, reason, items)
        return 1 if status == DeadLetter.DEAD_LETTERED else 0


def _items(element: bytes) -> int:
    try:
        return decode(element).count
    except ForeignElement:
        return 0
