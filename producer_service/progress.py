"""Progress about once a second: a bar on a terminal, a log line otherwise."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

import redis

from exactsum.keys import Keys
from exactsum.runs import read_progress

log = logging.getLogger("producer.progress")


class ProgressReporter(threading.Thread):
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        run_id: str,
        total: int,
        pushed: Callable[[], int],
        *,
        interval: float = 1.0,
        queue_key: str | None = None,
    ) -> None:
        super().__init__(name="progress", daemon=True)
        self.client, self.keys, self.run_id, self.total = client, keys, run_id, total
        self.queue_key = queue_key
        self.pushed = pushed
        self.interval = interval
        self.finished = threading.Event()
        self.tty = sys.stderr.isatty()

    def run(self) -> None:
        last_time, last_done = time.monotonic(), 0
        while not self.finished.wait(self.interval):
            try:
                progress = read_progress(self.client, self.keys, self.run_id, self.queue_key)
            except redis.RedisError as exc:
                # The pusher and the waiter retry and log each attempt; this only skips a tick.
                log.debug("progress: %s", exc)
                continue
            now = time.monotonic()
            rate = (progress.resolved - last_done) / max(now - last_time, 1e-9)
            last_time, last_done = now, progress.resolved
            self._show(self.pushed(), progress.committed, progress.dead_lettered,
                       progress.queue_depth, rate)
        if self.tty:
            sys.stderr.write("\n")

    def _show(self, pushed: int, committed: int, dead: int, depth: int, rate: float) -> None:
        if self.tty:
            width = 30
            done = committed + dead
            filled = width * done // self.total if self.total else width
            bar = "#" * filled + "-" * (width - filled)
            sys.stderr.write(
                f"\r[{bar}] {done:,}/{self.total:,} committed  pushed {pushed:,}  "
                f"queue {depth:,}  {rate:,.0f} items/s   "
            )
            sys.stderr.flush()
        else:
            log.info(
                "produced %d/%d, committed %d, dead-lettered %d, queue depth %d "
                "elements, %.0f items/s", pushed, self.total, committed, dead, depth, rate,
            )
