"""One worker thread: claim batches into its own in-flight list, process them, commit them.

Each thread has its own in-flight list, so the list is exactly what this thread holds. After any
error, when a reply may have been lost (a claim that Redis carried out but whose answer never
came back), and whenever the queue is idle, the thread re-reads its list and finishes what is
there before it claims more. The commit script answers how many elements are left in the list,
so a stray element is noticed without an extra round trip.

Small batches are claimed several at a time (``claim.lua``, up to about ``CLAIM_ITEMS`` items and
at most ``max_claim`` elements) and the batches of one run among them are committed by one call
of ``commit.lua``, which judges each batch on its own: a round trip, and an fsync of the AOF, is
then shared by many small batches instead of paid for each. With large batches, or when the
queue is empty, a thread claims one element at a time with the blocking BLMOVE.

On a Redis Cluster a run is split into partitions, each in its own hash slot with its own queue,
and a thread has an in-flight list in each. A thread cannot block on several slots at once, so
it takes turns: a non-blocking claim from each partition in rotation, and only when all are
empty a short blocking claim on the next one (longer while they stay empty). Everything a
thread holds at a time comes from one partition (``self.part``), whose keys its scripts use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import redis

from exactsum import counters
from exactsum.audit import dead_letter_entry
from exactsum.cluster import PartitionDirectory
from exactsum.connection import RetryAborted, retrying
from exactsum.counters import Event
from exactsum.events import NO_CONSUMER_EVENTS, ConsumerEvents
from exactsum.keys import Keys
from exactsum.logs import bind_run
from exactsum.protocol import Batch, ForeignElement, decode
from exactsum.replication import NO_REPLICATION, NotAcknowledged, Replication
from exactsum.scripts import Commit, DeadLetter, Retry, Scripts
from exactsum.transport.failures import FailureInjector
from exactsum.transport.latency import LatencyHistogram
from exactsum.transport.work import simulate_work

log = logging.getLogger("consumer.worker")

# A claim of several elements aims at about this many items.
CLAIM_ITEMS = 1024
# With several partitions, how long a thread first blocks on one of them when all are empty (work
# arriving in another waits that long for this thread); doubled while they stay empty, up to
# --block-timeout, so that idle threads do not poll the cluster.
PARTITION_WAIT = 0.2


class Worker(threading.Thread):
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: Scripts,
        consumer_id: str,
        index: int,
        *,
        block_timeout: float,
        stop_claiming: threading.Event,
        halt: threading.Event,
        work_cpu_us: float = 0.0,
        work_io_ms: float = 0.0,
        max_claim: int = 64,
        failures: FailureInjector | None = None,
        max_attempts: int = 3,
        on_fatal: Callable[[], None] = lambda: None,
        events: ConsumerEvents = NO_CONSUMER_EVENTS,
        replication: Replication = NO_REPLICATION,
        directory: PartitionDirectory | None = None,
    ) -> None:
        super().__init__(name=f"worker-{index}", daemon=True)
        self.client, self.scripts = client, scripts
        self.consumer_id = consumer_id
        self.index = index
        self.directory = directory or PartitionDirectory(keys, cluster=False)
        # The partition whose claims ``pending`` holds (the untagged layout without Cluster).
        self.part = keys.partition(self.directory.tags[0]) if self.directory.tags else keys
        self._turn = index  # threads start their rotation over the partitions at different ones
        self._idle_wait = min(block_timeout, PARTITION_WAIT)
        self.block_timeout = block_timeout
        self.stop_claiming = stop_claiming
        self.halt = halt
        self.work_cpu_us, self.work_io_ms = work_cpu_us, work_io_ms
        self.max_claim = max_claim
        self.claim_size = 1  # elements per claim; adapts to the batch size seen
        self.failures = failures or FailureInjector()
        self.max_attempts = max_attempts
        self.on_fatal = on_fatal
        self.events = events
        # Each write counts once enough replicas have it; short of that it is retried like a
        # write whose reply was lost (exactsum.replication).
        self.replication = replication
        self.error: BaseException | None = None
        # Claimed and not yet resolved: ``pending`` waits its turn, ``taken`` is being handled.
        self.pending: deque[bytes] = deque()
        self.taken = 0
        self.resync = True
        self.committed_items = 0
        self.latency = LatencyHistogram()

    # -- claiming --------------------------------------------------------------------------

    @property
    def keys(self) -> Keys:
        """The keys of the partition this thread holds claims in now."""
        return self.part

    @property
    def inflight(self) -> str:
        return self.part.inflight(self.consumer_id, self.index)

    def inflight_lists(self) -> list[tuple[Keys, str]]:
        """This thread's in-flight list in each partition, with that partition's keys."""
        parts = [self.part.partition(tag) for tag in self.directory.tags]
        return [(part, part.inflight(self.consumer_id, self.index)) for part in parts]

    def _mark_resync(self) -> None:
        self.resync = True

    def _claim(self) -> bool:
        """Make sure ``pending`` holds something; False when the queue stayed empty."""
        if self.pending:
            return True
        tags = self.directory.tags
        if not tags:
            # A cluster where no producer registered a partition yet.
            self.stop_claiming.wait(self.block_timeout)
            return False
        if self.resync:
            self.resync = False
            for part, inflight in self.inflight_lists():
                held = cast(list[bytes], self.client.lrange(inflight, 0, -1))
                if held:
                    self.part = part
                    # The list is pushed on the left, so its oldest element is on the right.
                    self.pending.extend(reversed(held))
                    log.info("%s: finishing %d elements already in %s", self.name, len(held),
                             inflight)
                    # Other partitions' lists may hold some too: look again next time.
                    self.resync = len(tags) > 1
                    return True
        if len(tags) > 1:
            return self._claim_rotating(tags)
        self.part = self.part.partition(tags[0])
        if self.claim_size > 1:
            claimed = cast(list[bytes], self.scripts.claim(
                keys=[self.keys.queue, self.inflight], args=[self.claim_size]))
            if claimed:
                self.pending.extend(claimed)
                return True
        element = self._blmove(self.keys.queue, self.inflight, self.block_timeout)
        if element is None:
            # Idle: a good moment to make sure nothing arrived in the list unseen.
            self.resync = True
            return False
        self.pending.append(element)
        return True

    def _claim_rotating(self, tags: tuple[str | None, ...]) -> bool:
        """Claim from the partitions in turn; block briefly on one only when all are empty."""
        for _ in range(len(tags)):
            part = self.part.partition(tags[self._turn % len(tags)])
            self._turn += 1
            inflight = part.inflight(self.consumer_id, self.index)
            claimed = cast(list[bytes], self.scripts.claim(keys=[part.queue, inflight],
                                                           args=[self.claim_size]))
            if claimed:
                self._idle_wait = min(self.block_timeout, PARTITION_WAIT)
                self.part = part
                self.pending.extend(claimed)
                return True
        part = self.part.partition(tags[self._turn % len(tags)])
        self._turn += 1
        inflight = part.inflight(self.consumer_id, self.index)
        element = self._blmove(part.queue, inflight, self._idle_wait)
        if element is None:
            # Idle: wait longer next time (up to --block-timeout), and make sure nothing arrived
            # unseen in the list we blocked on (the other lists are re-read after errors).
            self._idle_wait = min(self.block_timeout, self._idle_wait * 2)
            held = cast(list[bytes], self.client.lrange(inflight, 0, -1))
            if not held:
                return False
            self.part = part
            self.pending.extend(reversed(held))
            return True
        self._idle_wait = min(self.block_timeout, PARTITION_WAIT)
        self.part = part
        self.pending.append(element)
        return True

    def _blmove(self, queue: str, inflight: str, timeout: float) -> bytes | None:
        """One element from ``queue`` into ``inflight``, blocking up to ``timeout`` seconds."""
        # Redis takes a fractional timeout; redis-py's stub says int.
        args = (queue, inflight, timeout, "RIGHT", "LEFT")
        if self.replication.enabled and not self.directory.cluster:
            # In a pipeline, so that WAIT follows the move on the same connection. (On a
            # cluster the scripts are acknowledged per node; a claim the failover loses is
            # fenced at its commit and claimed again.)
            pipe = self.client.pipeline(transaction=False)
            pipe.blmove(*args)  # type: ignore[arg-type]
            return cast(bytes | None, self.replication.execute(pipe)[0])
        return cast(bytes | None, self.client.blmove(*args))  # type: ignore[arg-type]

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            # A worker that dies leaves its claims in its list for the reclaimer, but a service
            # with a dead worker must not go on looking healthy: tell the service to stop.
            self.error = exc
            log.exception("%s: stopped by an error it cannot retry", self.name)
            self.on_fatal()

    def _loop(self) -> None:
        while not self.stop_claiming.is_set():
            try:
                claimed = retrying(self._claim, "claim", log, stop=self.stop_claiming,
                                   on_error=self._mark_resync)
            except RetryAborted:
                return
            if not claimed:
                continue
            elements = [self.pending.popleft()
                        for _ in range(min(len(self.pending), self.max_claim))]
            try:
                self.handle_many(elements)
            except RetryAborted:
                # Told to stop while Redis was unreachable: the elements stay in our list and
                # the service gives them back on the way out.
                return
            finally:
                bind_run(None)

    # -- processing ------------------------------------------------------------------------

    def handle(self, element: bytes) -> None:
        """Process and resolve one claimed element."""
        self.handle_many([element])

    def handle_many(self, elements: list[bytes]) -> None:
        """Process claimed elements, then resolve each: commit, retry, or dead-letter.

        ``self.taken`` counts those of them not resolved yet (they are still in our list).
        """
        self.taken = len(elements)
        try:
            self._handle_many(elements, time.monotonic())
        finally:
            self.taken = 0

    def _handle_many(self, elements: list[bytes], taken_at: float) -> None:
        batches: list[tuple[bytes, Batch]] = []
        items = 0
        for element in elements:
            try:
                batch = decode(element)
            except ForeignElement as exc:
                self._dead_letter_foreign(element, str(exc))
                continue
            batches.append((element, batch))
            items += batch.count
        if items:
            self.claim_size = max(1, min(self.max_claim, CLAIM_ITEMS * len(elements) // items))
        simulate_work(items, self.work_cpu_us, self.work_io_ms)
        by_run: dict[str, list[tuple[bytes, Batch]]] = {}
        for element, batch in batches:
            bind_run(batch.run_id)
            if self.failures.active:
                reasons = self.failures.failures(batch)
                if reasons:
                    self._failed(element, batch, reasons)
                    continue
            by_run.setdefault(batch.run_id, []).append((element, batch))
        for run_id, group in by_run.items():
            bind_run(run_id)
            self._commit(group, taken_at)

    def _commit(self, group: list[tuple[bytes, Batch]], taken_at: float) -> None:
        rk = self.keys.run(group[0][1].run_id)
        args: list[bytes | str | int] = [self.consumer_id]
        for element, batch in group:
            args += [element, batch.seq, batch.count, batch.total]
        # What an attempt that the replicas did not acknowledge counted: the re-send then finds
        # those batches counted (status 0), and they are still ours unless a failover undid it.
        unacknowledged: list[int] = []

        def send() -> Any:
            try:
                return self.scripts.commit(
                    keys=[self.inflight, rk.meta, rk.done, rk.sum, rk.committed,
                          rk.by_consumer, rk.stale],
                    args=args,
                )
            except NotAcknowledged as exc:
                if exc.replies and not unacknowledged:
                    unacknowledged.extend(int(s) for s in exc.replies[0][:-1])
                raise

        # A commit keeps retrying through a shutdown (it may still count within the grace);
        # only ``halt``, at the end of the grace, gives up on it.
        reply = retrying(send, "commit", log, stop=self.halt, on_error=self._mark_resync)
        now_us = time.time_ns() // 1000
        claim_s = time.monotonic() - taken_at
        statuses = [Commit(int(status)) for status in reply[:-1]]
        if unacknowledged:
            statuses = [Commit.COUNTED
                        if now == Commit.ALREADY_COUNTED and before == Commit.COUNTED else now
                        for now, before in zip(statuses, unacknowledged, strict=True)]
        # Batches of an unknown run, or that would overflow, stay in our list until dead-lettered.
        self.taken -= sum(status not in (Commit.UNKNOWN_RUN, Commit.OVERFLOW)
                          for status in statuses)
        self._note_left(int(reply[-1]))
        for (element, batch), status in zip(group, statuses, strict=True):
            if status == Commit.COUNTED:
                self.committed_items += batch.count
                self.latency.record(now_us - batch.pushed_us, batch.count)
                self.events.on_commit(batch, claim_s)
            elif status == Commit.ALREADY_COUNTED:
                self.events.on_refused(batch, "already_counted")
                counters.incr(Event.COMMIT_ALREADY_COUNTED)
                log.info("%s: batch %s/%d was already counted; not counted again", self.name,
                         batch.run_id, batch.seq)
            elif status == Commit.FENCED:
                self.events.on_refused(batch, "fenced")
                counters.incr(Event.COMMIT_FENCED)
                log.warning("%s: batch %s/%d was reclaimed from us while we were away; whoever "
                            "holds it now counts it", self.name, batch.run_id, batch.seq)
            elif status == Commit.UNKNOWN_RUN:
                self._dead_letter_foreign(element, f"run {batch.run_id!r} is unknown or expired")
            elif status == Commit.OVERFLOW:
                self._dead_letter_batch(element, batch,
                                        "the run's sum would leave signed 64 bits")

    def _call(self, what: str, operation: Callable[[], Any]) -> tuple[DeadLetter, int]:
        reply = retrying(operation, what, log, stop=self.halt, on_error=self._mark_resync)
        return DeadLetter(int(reply[0])), int(reply[-1])

    def _failed(self, element: bytes, batch: Batch, reasons: list[str]) -> None:
        """Processing failed: another attempt, or dead letters once attempts are used up."""
        rk = self.keys.run(batch.run_id)
        reply = retrying(
            lambda: self.scripts.retry(
                keys=[self.inflight, self.keys.queue, rk.attempts, rk.done],
                args=[element, batch.seq, self.max_attempts],
            ),
            "retry", log, stop=self.halt, on_error=self._mark_resync,
        )
        status, attempts, left = Retry(int(reply[0])), int(reply[1]), int(reply[2])
        summary = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5
                                             else "")
        if status == Retry.ATTEMPTS_USED_UP:
            # Still in our list: the dead-letter call resolves it.
            self._dead_letter_batch(element, batch, f"{summary} (after {attempts} attempts)",
                                    attempts=attempts)
            return
        self.taken -= 1
        if status == Retry.REQUEUED:
            log.warning("%s: batch %s/%d failed (attempt %d of %d): %s; requeued", self.name,
                        batch.run_id, batch.seq, attempts, self.max_attempts, summary)
            self.events.on_retry(batch)
            counters.incr(Event.BATCH_RETRIED)
        self._note_left(left)

    def _note_left(self, left: int) -> None:
        """``left`` elements remain in our list; more than we know of means a lost claim."""
        if left > len(self.pending) + self.taken:
            self.resync = True
            self.pending.clear()

    def _entry(self, element: bytes, reason: str, **facts: object) -> str:
        return dead_letter_entry(element, reason, self.consumer_id, **facts)

    def _dead_letter_foreign(self, element: bytes, reason: str) -> None:
        entry = self._entry(element, reason)
        status, left = self._call(
            "dead-letter",
            lambda: self.scripts.dead_letter_foreign(
                keys=[self.inflight, self.keys.dead],
                args=[element, entry],
            ),
        )
        self.taken -= 1
        if status == DeadLetter.DEAD_LETTERED:
            log.warning("%s: dead-lettered an element that is not ours (%d bytes): %s",
                        self.name, len(element), reason)
            self.events.on_foreign()
        self._note_left(left)

    def _dead_letter_batch(self, element: bytes, batch: Batch, reason: str,
                           attempts: int = 1) -> None:
        rk = self.keys.run(batch.run_id)
        entry = self._entry(element, reason, run=batch.run_id, seq=batch.seq, items=batch.count,
                            attempts=attempts)
        status, left = self._call(
            "dead-letter",
            lambda: self.scripts.dead_letter(
                keys=[self.inflight, rk.done, rk.dead, rk.dead_items],
                args=[element, batch.seq, batch.count, entry],
            ),
        )
        self.taken -= 1
        if status == DeadLetter.DEAD_LETTERED:
            log.error("%s: batch %s/%d (%d items) dead-lettered: %s", self.name, batch.run_id,
                      batch.seq, batch.count, reason)
            self.events.on_dead_letter(batch)
            counters.incr(Event.BATCH_DEAD_LETTERED)
        self._note_left(left)
