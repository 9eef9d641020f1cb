"""One worker thread: claim a batch into its own in-flight list, process it, commit it.

Each thread has its own in-flight list, so the list is exactly what this thread holds. After any
error, when a reply may have been lost (a claim that Redis carried out but whose answer never
came back), and whenever the queue is idle, the thread re-reads its list and finishes what is
there before it claims more. The commit script answers how many elements are left in the list,
so a stray element is noticed without an extra round trip.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import redis

from consumer_service.failures import FailureInjector
from exactsum.connection import RetryAborted, retrying
from exactsum.events import NO_CONSUMER_EVENTS, ConsumerEvents
from exactsum.keys import Keys
from exactsum.logs import bind_run
from exactsum.protocol import Batch, ForeignElement, decode
from exactsum.scripts import Scripts

log = logging.getLogger("consumer.worker")

COUNTED, ALREADY_COUNTED, FENCED, UNKNOWN_RUN, OVERFLOW = 1, 0, -1, -2, -3


def simulate_work(items: int, cpu_us: float, io_ms: float) -> None:
    """Stand-in for real per-item work, for benchmarks and demos."""
    if cpu_us:
        end = time.perf_counter() + items * cpu_us / 1e6
        while time.perf_counter() < end:
            pass
    if io_ms:
        time.sleep(items * io_ms / 1000)


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
        failures: FailureInjector | None = None,
        max_attempts: int = 3,
        on_fatal: Callable[[], None] = lambda: None,
        events: ConsumerEvents = NO_CONSUMER_EVENTS,
    ) -> None:
        super().__init__(name=f"worker-{index}", daemon=True)
        self.client, self.keys, self.scripts = client, keys, scripts
        self.consumer_id = consumer_id
        self.inflight = keys.inflight(consumer_id, index)
        self.block_timeout = block_timeout
        self.stop_claiming = stop_claiming
        self.halt = halt
        self.work_cpu_us, self.work_io_ms = work_cpu_us, work_io_ms
        self.failures = failures or FailureInjector()
        self.max_attempts = max_attempts
        self.on_fatal = on_fatal
        self.events = events
        self.error: BaseException | None = None
        self.pending: deque[bytes] = deque()
        self.resync = True
        self.committed_items = 0
        self.busy = False

    # -- claiming --------------------------------------------------------------------------

    def _mark_resync(self) -> None:
        self.resync = True

    def _claim(self) -> bytes | None:
        if self.pending:
            return self.pending.popleft()
        if self.resync:
            held = cast(list[bytes], self.client.lrange(self.inflight, 0, -1))
            self.resync = False
            if held:
                # The list is pushed on the left, so its oldest element is on the right.
                self.pending.extend(reversed(held))
                log.info("%s: finishing %d elements already in %s", self.name, len(held),
                         self.inflight)
                return self.pending.popleft()
        # Redis takes a fractional timeout; redis-py's stub says int.
        element = cast(bytes | None, self.client.blmove(
            self.keys.queue, self.inflight, self.block_timeout, "RIGHT", "LEFT"  # type: ignore[arg-type]
        ))
        if element is None:
            # Idle: a good moment to make sure nothing arrived in the list unseen.
            self.resync = True
        return element

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
                element = retrying(self._claim, "claim", log, stop=self.stop_claiming,
                                   on_error=self._mark_resync)
            except RetryAborted:
                return
            if element is None:
                continue
            self.busy = True
            try:
                self.handle(element)
            except RetryAborted:
                # Told to stop while Redis was unreachable: the element stays in our list and
                # the service gives it back on the way out.
                return
            finally:
                self.busy = False
                bind_run(None)

    # -- processing ------------------------------------------------------------------------

    def handle(self, element: bytes) -> None:
        taken = time.monotonic()
        try:
            batch = decode(element)
        except ForeignElement as exc:
            self._dead_letter_foreign(element, str(exc))
            return
        bind_run(batch.run_id)
        simulate_work(batch.count, self.work_cpu_us, self.work_io_ms)
        if self.failures.active:
            reasons = self.failures.failures(batch)
            if reasons:
                self._failed(element, batch, reasons)
                return
        rk = self.keys.run(batch.run_id)
        status, left = self._call(
            "commit",
            lambda: self.scripts.commit(
                keys=[self.inflight, rk.meta, rk.done, rk.sum, rk.committed, rk.by_consumer,
                      rk.stale],
                args=[element, batch.seq, batch.count, batch.total, self.consumer_id],
            ),
        )
        if status == COUNTED:
            self.committed_items += batch.count
            self.events.on_commit(batch, time.monotonic() - taken)
        elif status == ALREADY_COUNTED:
            self.events.on_refused(batch, "already_counted")
            log.info("%s: batch %s/%d was already counted; not counted again", self.name,
                     batch.run_id, batch.seq)
        elif status == FENCED:
            self.events.on_refused(batch, "fenced")
            log.warning("%s: batch %s/%d was reclaimed from us while we were away; whoever "
                        "holds it now counts it", self.name, batch.run_id, batch.seq)
        elif status == UNKNOWN_RUN:
            self._dead_letter_foreign(element, f"run {batch.run_id!r} is unknown or expired")
            return
        elif status == OVERFLOW:
            self._dead_letter_batch(element, batch, "the run's sum would leave signed 64 bits")
            return
        self._note_left(left)

    def _call(self, what: str, operation: Callable[[], Any]) -> tuple[int, int]:
        # A commit keeps retrying through a shutdown (it may still count within the grace);
        # only ``halt``, at the end of the grace, gives up on it.
        reply = retrying(operation, what, log, stop=self.halt, on_error=self._mark_resync)
        return int(reply[0]), int(reply[-1])

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
        status, attempts, left = (int(x) for x in reply)
        summary = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5
                                             else "")
        if status == 1:
            log.warning("%s: batch %s/%d failed (attempt %d of %d): %s; requeued", self.name,
                        batch.run_id, batch.seq, attempts, self.max_attempts, summary)
            self.events.on_retry(batch)
        elif status == 2:
            self._dead_letter_batch(element, batch, f"{summary} (after {attempts} attempts)",
                                    attempts=attempts)
            return
        self._note_left(left)

    def _note_left(self, left: int) -> None:
        if left > len(self.pending):
            self.resync = True
            self.pending.clear()

    def _entry(self, element: bytes, reason: str, **facts: object) -> str:
        return json.dumps(
            {"reason": reason, **facts, "consumer": self.consumer_id, "at": time.time(),
             "element_b64": base64.b64encode(element).decode()}
        )

    def _dead_letter_foreign(self, element: bytes, reason: str) -> None:
        entry = self._entry(element, reason)
        status, left = self._call(
            "dead-letter",
            lambda: self.scripts.dead_letter_foreign(
                keys=[self.inflight, self.keys.dead], args=[element, entry]
            ),
        )
        if status == 1:
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
        if status == 1:
            log.error("%s: batch %s/%d (%d items) dead-lettered: %s", self.name, batch.run_id,
                      batch.seq, batch.count, reason)
            self.events.on_dead_letter(batch)
        self._note_left(left)

