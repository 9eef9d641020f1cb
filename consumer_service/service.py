"""The consumer process: a pool of workers, a heartbeat, a reclaimer, and an orderly stop.

Start-up order: the heartbeat is written before the first claim, so no other consumer mistakes
our fresh claims for a dead consumer's. Stop order (SIGTERM/SIGINT set an Event; this loop does
the rest): workers stop claiming and finish what they hold, within the grace; whatever is still
claimed then is put back on the queue; only then is the heartbeat withdrawn.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from functools import partial

from consumer_service.failures import FailureInjector
from consumer_service.heartbeat import Heartbeat
from consumer_service.latency import LatencyHistogram, write_stats
from consumer_service.reclaimer import Reclaimer
from consumer_service.settings import ConsumerSettings
from consumer_service.worker import Worker
from exactsum.connection import FATAL_ERRORS, RetryAborted, make_client, retrying
from exactsum.events import NO_CONSUMER_EVENTS, ConsumerEvents
from exactsum.keys import Keys
from exactsum.metrics import ConsumerMetrics
from exactsum.scripts import Scripts

log = logging.getLogger("consumer")


def new_consumer_id() -> str:
    """Fresh at every start: a container's hostname can come back on a new container."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:24] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class ConsumerService:
    def __init__(self, settings: ConsumerSettings, consumer_id: str | None = None) -> None:
        self.settings = settings
        self.consumer_id = consumer_id or new_consumer_id()
        self.keys = Keys(settings.key_prefix)
        self.stop_claiming = threading.Event()
        self.halt = threading.Event()
        self.wake = threading.Event()  # a signal or a worker's fatal error
        url, timeout = settings.redis, settings.socket_timeout
        self.control = make_client(url, socket_timeout=timeout, name=f"{self.consumer_id}-ctl")
        self.scripts = Scripts.register(self.control)
        self.metrics = (ConsumerMetrics(self.consumer_id, self.keys, url, settings.threads)
                        if settings.metrics_port else None)
        events: ConsumerEvents = self.metrics or NO_CONSUMER_EVENTS
        self.heartbeat = Heartbeat(
            make_client(url, socket_timeout=min(timeout, settings.heartbeat_interval),
                        name=f"{self.consumer_id}-hb"),
            self.keys, self.consumer_id, ttl=settings.heartbeat_ttl, threads=settings.threads,
            committed=lambda: sum(w.committed_items for w in self.workers),
        )
        self.reclaimer = Reclaimer(
            make_client(url, socket_timeout=timeout, name=f"{self.consumer_id}-reclaim"),
            self.keys, self.scripts, self.consumer_id, interval=settings.reclaim_interval,
            events=events, replication=settings.replication,
        )
        self.workers = [
            Worker(
                make_client(url, socket_timeout=timeout, name=f"{self.consumer_id}-w{i}"),
                self.keys, self.scripts, self.consumer_id, i,
                block_timeout=settings.block_timeout, stop_claiming=self.stop_claiming,
                halt=self.halt, work_cpu_us=settings.work_cpu_us,
                work_io_ms=settings.work_io_ms, max_claim=settings.max_claim,
                failures=FailureInjector(settings.fail_rate, settings.flaky_rate),
                max_attempts=settings.max_attempts, on_fatal=self.wake.set, events=events,
                replication=settings.replication,
            )
            for i in range(settings.threads)
        ]

    def serve(self, stop: threading.Event) -> int:
        """Run until ``stop`` is set; return the exit status."""
        if self.metrics is not None:
            self.metrics.serve(self.settings.metrics_addr, self.settings.metrics_port)
        try:
            retrying(self.heartbeat.beat, "first heartbeat", log, stop=stop)
        except RetryAborted:
            return 0
        log.info("consumer %s: %d threads, heartbeat TTL %.1fs, serving %s on %s",
                 self.consumer_id, self.settings.threads, self.settings.heartbeat_ttl,
                 self.keys.queue, self.settings.redis.describe())
        if self.settings.id_file:
            with open(self.settings.id_file, "w", encoding="utf-8") as out:
                out.write(self.consumer_id + "\n")
        self.heartbeat.start()
        self.reclaimer.start()
        for worker in self.workers:
            worker.start()
        def relay_stop() -> None:
            stop.wait()
            self.wake.set()

        threading.Thread(target=relay_stop, name="stop-relay", daemon=True).start()
        self.wake.wait()
        status = self.shutdown()
        errors = [w.error for w in self.workers if w.error is not None]
        if errors:
            if isinstance(errors[0], FATAL_ERRORS):
                raise errors[0]
            return 1
        return status

    def shutdown(self) -> int:
        started = time.monotonic()
        log.info("consumer %s: stopping; finishing in-flight batches (grace %.1fs)",
                 self.consumer_id, self.settings.grace)
        self.stop_claiming.set()
        self.reclaimer.stopping.set()
        # Leave a margin of the grace for giving back and withdrawing.
        finish_by = started + max(self.settings.grace - 1.5, self.settings.grace * 0.5)
        for worker in self.workers:
            worker.join(timeout=max(0.0, finish_by - time.monotonic()))
        self.halt.set()
        still_busy = [w.name for w in self.workers if w.is_alive()]
        if still_busy:
            log.warning("consumer %s: %s did not finish within the grace; giving their batches "
                        "back", self.consumer_id, ", ".join(still_busy))
        given_back = self._give_back(deadline=started + self.settings.grace - 0.3)
        self.heartbeat.withdraw_until(started + self.settings.grace - 0.1)
        committed = sum(w.committed_items for w in self.workers)
        log.info("consumer %s: stopped after committing %d items; %d elements given back",
                 self.consumer_id, committed, given_back)
        if self.settings.stats_file:
            self._write_stats(committed, given_back)
        return 0

    def _write_stats(self, committed: int, given_back: int) -> None:
        latency = LatencyHistogram.merged(w.latency for w in self.workers)
        record = {"consumer": self.consumer_id, "threads": self.settings.threads,
                  "committed_items": committed, "given_back": given_back,
                  "latency": latency.summary()}
        try:
            write_stats(self.settings.stats_file or "", record)
        except OSError as exc:
            log.error("consumer %s: could not write the stats file: %s", self.consumer_id, exc)

    def _give_back(self, deadline: float) -> int:
        """Put every element still in our in-flight lists back on the queue."""
        moved = 0
        for worker in self.workers:
            keys = [self.keys.heartbeat(self.consumer_id), worker.inflight, self.keys.queue,
                    self.keys.reclaimed]
            try:
                moved += int(retrying(partial(self.settings.replication.script,
                                              self.scripts.reclaim, keys, ["0"]),
                                      "give back", log, deadline=deadline))
            except RetryAborted:
                log.error("consumer %s: could not give back %s; other consumers reclaim it "
                          "once the heartbeat lapses", self.consumer_id, worker.inflight)
        return moved
