"""Named counts of what a process lived through (fenced commits, reclaims, retries, ...).

The log lines say the same to an operator; these counts say it to a program. A test or the
chaos harness reads them, not the log's wording, from the file a service keeps with
``--counters-file`` (rewritten within :data:`FLUSH_S` of each event, and at exit, so even a
SIGKILLed process leaves its counts up to then), from the consumer's ``--stats-file`` or the
producer's JSON report. The metrics server exports them too (``exactsum_events_total``).

One registry per process (:data:`COUNTERS`): :func:`exactsum.connection.retrying` has no
context to carry one, and a process is what a reader asks about. The RQ transport's worker
processes keep their own files beside the consumer's (``FILE.<worker>``); :func:`read` adds
them up.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

FLUSH_S = 0.1


class Event(StrEnum):
    """Every counted event, by the name readers see."""

    # A Redis command failed and is retried (exactsum.connection.retrying), once per attempt.
    REDIS_RETRY = "redis_retry"
    # ... of which TRYAGAIN: a script's keys were split between two cluster nodes while their
    # slot migrated (a reshard).
    REDIS_RETRY_TRYAGAIN = "redis_retry_tryagain"
    # A commit counted nothing: the batch was reclaimed from this consumer (fenced) ...
    COMMIT_FENCED = "commit_fenced"
    # ... or already counted (re-sent, or counted by another consumer after a reclaim).
    COMMIT_ALREADY_COUNTED = "commit_already_counted"
    # Processing a batch failed and it went back to the queue for another attempt.
    BATCH_RETRIED = "batch_retried"
    # A batch went to its run's dead letters (attempts used up).
    BATCH_DEAD_LETTERED = "batch_dead_lettered"
    # Claims of dead consumers this consumer's reclaimer moved back to the queue.
    ELEMENTS_RECLAIMED = "elements_reclaimed"
    # Work threads that did not finish within the grace at shutdown.
    GRACE_OVERRUN = "grace_overrun"
    # Elements this consumer gave back to the queue when it stopped.
    ELEMENTS_GIVEN_BACK = "elements_given_back"
    # The producer found its run taken over by another producer (it exits 4).
    PRODUCER_FENCED = "producer_fenced"
    # A push found the queue at its bound and waited for the consumers.
    PUSH_WAIT = "push_wait"
    # RQ transport: jobs of a dead RQ worker put back on the queue by a reclaimer.
    RQ_JOBS_PUT_BACK = "rq_jobs_put_back"
    # RQ transport: unresolved batches found with no RQ job, enqueued again.
    RQ_ORPHANS_REQUEUED = "rq_orphans_requeued"
    # RQ transport: RQ worker processes started, and seen dead (exited on their own).
    RQ_WORKER_STARTED = "rq_worker_started"
    RQ_WORKER_DIED = "rq_worker_died"
    # RQ transport: an RQ worker's work loop ended on a Redis error (RQ retries none of them);
    # on a transient one (a refusal of writes, a lost primary) it then waits for writes.
    RQ_WORKER_REDIS_ERROR = "rq_worker_redis_error"
    # RQ transport: a worker exited with status 75, having waited until its Redis took writes
    # again (a restart, a failover; counted by the pool, among rq_worker_died).
    RQ_WORKER_REDIS_BACK = "rq_worker_redis_back"
    # RQ transport: a dead worker's slot gets a new worker at once (it waited out an outage, or
    # had lived long) ...
    RQ_WORKER_RESTARTED_AT_ONCE = "rq_worker_restarted_at_once"
    # ... or after a backoff that grows while the slot's workers keep dying young.
    RQ_WORKER_RESTART_DELAYED = "rq_worker_restart_delayed"


class Counters:
    """A thread-safe count of :class:`Event` s, optionally kept in a JSON file."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._path: Path | None = None
        self._writer: threading.Thread | None = None
        self._write_lock = threading.Lock()  # the writer thread and the last flush at exit

    def incr(self, event: Event, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._counts[event.value] += n
        self._changed.set()

    def get(self, event: Event) -> int:
        with self._lock:
            return self._counts[event.value]

    def snapshot(self) -> dict[str, int]:
        """Every event, at zero when it never happened."""
        with self._lock:
            return {event.value: self._counts[event.value] for event in Event}

    def keep_in(self, path: str | os.PathLike[str]) -> None:
        """Keep ``path`` up to date from now on (a daemon thread rewrites it after changes)."""
        self._path = Path(path)
        self.flush()
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="counters",
                                            daemon=True)
            self._writer.start()

    def flush(self) -> None:
        """Write the file now (at exit: the daemon thread may not get another turn)."""
        path = self._path
        if path is None:
            return
        with self._write_lock:
            self._changed.clear()
            record = {"pid": os.getpid(), "counters": self.snapshot()}
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(record, sort_keys=True) + "\n")
            os.replace(temporary, path)  # a reader never sees half a file

    def _write_loop(self) -> None:
        while True:
            self._changed.wait()
            time.sleep(FLUSH_S)  # gather a burst into one write
            # A full disk: the next change tries again (the counts stay in memory).
            with contextlib.suppress(OSError):
                self.flush()


COUNTERS = Counters()


def incr(event: Event, n: int = 1) -> None:
    COUNTERS.incr(event, n)


def kept_in(path: str | None) -> contextlib.AbstractContextManager[None]:
    """Keep :data:`COUNTERS` in ``path`` (None: nowhere) while in the block, and write the file
    a last time on the way out."""
    return _kept_in(path)


@contextlib.contextmanager
def _kept_in(path: str | None) -> Iterator[None]:
    if path:
        COUNTERS.keep_in(path)
    try:
        yield
    finally:
        if path:
            with contextlib.suppress(OSError):
                COUNTERS.flush()


def read(path: str | os.PathLike[str]) -> dict[str, int]:
    """The counts in a ``--counters-file``, added to those of the files beside it that share
    its name as a prefix (``FILE.<worker>``: the RQ worker processes'); all zero if none
    exists yet."""
    base = Path(path)
    total: Counter[str] = Counter({event.value: 0 for event in Event})
    files = [base, *base.parent.glob(f"{base.name}.*")] if base.parent.exists() else []
    for file in files:
        try:
            record = json.loads(file.read_text())
        except (OSError, ValueError):
            continue  # not written yet
        total.update({str(k): int(v) for k, v in record.get("counters", {}).items()})
    return dict(total)
