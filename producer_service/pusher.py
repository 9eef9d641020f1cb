"""The producer's thread pool: draws batches from the source and pushes them onto the queue.

Each push carries several batches, so a round trip carries thousands of items, through the
transport's sink (:meth:`exactsum.transport.base.Transport.sink`): one call of ``push.lua`` for
the native transport, one MULTI transaction of RQ jobs for the RQ transport. Either marks each
batch pushed in the run's ``pushed`` bitmap, which makes a re-sent push (after a lost reply) a
no-op, and stops at the queue's bound, which is the backpressure: the thread waits and sends
the rest again. Either pushes only while this producer's epoch is the run's
(:class:`exactsum.runs.ProducerFenced` otherwise): a producer that resumed the run since has
taken it over, and this one stops.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from exactsum import counters
from exactsum.connection import retrying
from exactsum.counters import Event
from exactsum.events import NO_PRODUCER_EVENTS, ProducerEvents
from exactsum.protocol import encode_text
from exactsum.transport.base import BatchSink
from producer_service.source import OutBatch

log = logging.getLogger("producer.pusher")

# Items per push call to aim for: enough that a round trip is a small share of the work, few
# enough that one script call stays well under a millisecond of Redis time.
ITEMS_PER_CALL = 8192
MAX_BATCHES_PER_CALL = 256


class Pusher:
    def __init__(
        self,
        sink: BatchSink,
        run_id: str,
        batches: Iterator[OutBatch],
        *,
        threads: int,
        batch_size: int,
        stop: threading.Event,
        deadline: float,
        rate: float = 0.0,
        events: ProducerEvents = NO_PRODUCER_EVENTS,
        streaming: bool = False,
        partitions: int = 1,
    ) -> None:
        self.sink = sink
        self.run_id = run_id
        self._batches = batches
        self.threads = threads
        # A stream's batches go one per call, each as soon as its lines are there, rather than
        # waiting for the lines of several. On a Redis Cluster a push is split into one call
        # per partition: draw enough batches that each of those calls still carries a full share.
        self.per_call = 1 if streaming else partitions * max(
            1, min(MAX_BATCHES_PER_CALL, ITEMS_PER_CALL // batch_size))
        self.stop = stop
        self.deadline = deadline
        self.rate = rate
        self.events = events
        self._lock = threading.Lock()
        self._drawn_items = 0
        self._started = 0.0
        self._failed = threading.Event()  # a thread failed: the others stop drawing
        self.pushed_items = 0

    def run(self) -> None:
        """Push everything; re-raise the first error of any thread (the others stop)."""
        self._started = time.monotonic()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="push") as pool:
            futures = [pool.submit(self._work) for _ in range(self.threads)]
            for future in futures:
                future.result()

    def _work(self) -> None:
        try:
            self._work_loop()
        except BaseException:
            self._failed.set()
            raise

    def _draw(self) -> tuple[list[OutBatch], list[float]]:
        """The next batches, and when each is due (``--rate``; empty when unpaced).

        Paced, it is the next batch and any after it that are already due: a producer that
        fell behind its rate catches up in one push call instead of falling further behind.
        """
        with self._lock:
            if not self.rate:
                return list(itertools.islice(self._batches, self.per_call)), []
            now = time.monotonic()
            chunk: list[OutBatch] = []
            dues: list[float] = []
            while len(chunk) < self.per_call:
                due = self._started + self._drawn_items / self.rate
                if chunk and due > now:
                    break
                batch = next(self._batches, None)
                if batch is None:
                    break
                chunk.append(batch)
                dues.append(due)
                self._drawn_items += batch.count
            return chunk, dues

    def _work_loop(self) -> None:
        while not self.stop.is_set() and not self._failed.is_set():
            chunk, dues = self._draw()
            if not chunk:
                return
            wait = dues[0] - time.monotonic() if dues else 0.0
            if wait > 0 and self.stop.wait(wait):
                return
            self._push(chunk, dues)

    def _push(self, chunk: list[OutBatch], dues: list[float]) -> None:
        # Paced, a batch is stamped with the wall-clock time it was due, not the time it was
        # sent: a late push then shows in the push-to-commit latency instead of hiding from it.
        offset_us = time.time_ns() // 1000 - time.monotonic() * 1e6
        batches = [
            (batch.seq, batch.count,
             encode_text(self.run_id, batch.seq, batch.count, batch.body,
                         int(dues[i] * 1e6 + offset_us) if dues else None))
            for i, batch in enumerate(chunk)
        ]
        pause = 0.002
        while batches:
            handled = retrying(
                lambda: self.sink.send(batches),  # noqa: B023
                "push", log, stop=self.stop, deadline=self.deadline,
            )
            if handled:
                items = sum(count for _, count, _ in batches[:handled])
                with self._lock:
                    self.pushed_items += items
                self.events.on_push(self.run_id, handled, items)
                batches = batches[handled:]
                pause = 0.002
                continue
            # The queue is at its bound: wait for the consumers, as queue.Queue.put() would.
            self.events.on_wait(self.run_id)
            counters.incr(Event.PUSH_WAIT)
            if self.stop.wait(pause):
                return
            pause = min(pause * 2, 0.05)


def queue_bound(max_queue_items: int, batch_size: int) -> int:
    """The queue holds batches, so its bound in elements is the item bound over the batch size
    (at least one element, or nothing could ever be pushed); 0: unbounded."""
    return max(1, max_queue_items // batch_size) if max_queue_items else 0
