"""Progress about once a second: a bar on a terminal, a log line otherwise; and the producer's
sign of life in its run's meta at each tick (:func:`exactsum.runs.mark_alive`).

The total of a stream is not known until it ends: then the line says what was read so far, and
the running sum committed so far, which is exact for the batches counted."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

import redis

from exactsum.audit import read_progress
from exactsum.keys import Keys
from exactsum.runs import mark_alive

log = logging.getLogger("producer.progress")


class ProgressReporter(threading.Thread):
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        run_id: str,
        total: Callable[[], int | None],
        pushed: Callable[[], int],
        *,
        interval: float = 1.0,
        queue_key: str | None = None,
        read: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(name="progress", daemon=True)
        self.client, self.keys, self.run_id, self.total = client, keys, run_id, total
        self.read = read  # a stream's lines read so far
        self.queue_key = queue_key
        self.pushed = pushed
        self.interval = interval
        self.finished = threading.Event()
        self.tty = sys.stderr.isatty()

    def run(self) -> None:
        last_time, last_done = time.monotonic(), 0
        while not self.finished.wait(self.interval):
            try:
                facts = {"items_read": self.read()} if self.read is not None else {}
                mark_alive(self.client, self.keys, self.run_id, **facts)
                progress = read_progress(self.client, self.keys, self.run_id, self.queue_key)
            except redis.RedisError as exc:
                # The pusher and the waiter retry and log each attempt; this only skips a tick.
                log.debug("progress: %s", exc)
                continue
            now = time.monotonic()
            rate = (progress.resolved - last_done) / max(now - last_time, 1e-9)
            last_time, last_done = now, progress.resolved
            self._show(self.pushed(), progress.committed, progress.dead_lettered,
                       progress.queue_depth, rate, progress.sum)
        if self.tty:
            sys.stderr.write("\n")

    def _show(self, pushed: int, committed: int, dead: int, depth: int, rate: float,
              total_sum: int) -> None:
        total = self.total()
        if self.tty:
            width = 30
            done = committed + dead
            if total is None:  # a stream: no end known, so no bar
                sys.stderr.write(f"\r{self.read() if self.read else pushed:,} read  "
                                 f"{done:,} committed  sum {total_sum:,}  queue {depth:,}  "
                                 f"{rate:,.0f} items/s   ")
                sys.stderr.flush()
                return
            filled = width * done // total if total else width
            bar = "#" * filled + "-" * (width - filled)
            sys.stderr.write(
                f"\r[{bar}] {done:,}/{total:,} committed  pushed {pushed:,}  "
                f"queue {depth:,}  {rate:,.0f} items/s   "
            )
            sys.stderr.flush()
        elif total is None:
            log.info("read %d, produced %d, committed %d (sum so far %d), dead-lettered %d, "
                     "queue depth %d elements, %.0f items/s",
                     self.read() if self.read else pushed, pushed, committed, total_sum, dead,
                     depth, rate)
        else:
            log.info(
                "produced %d/%d, committed %d, dead-lettered %d, queue depth %d "
                "elements, %.0f items/s", pushed, total, committed, dead, depth, rate,
            )
