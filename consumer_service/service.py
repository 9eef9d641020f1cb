"""The consumer process: a heartbeat, the transport's pool, and an orderly stop.

The service is the same for every transport (``--transport``): it owns the heartbeat, the id
file, the grace and the order of the stop, and hands the work to the transport's pool
(:class:`exactsum.transport.ConsumerPool`: worker threads for the native list, RQ worker
processes for RQ), which brings its own reclaimer.

Start-up order: the heartbeat is written before the pool starts, so no other consumer mistakes
our fresh claims for a dead consumer's. Stop order (SIGTERM/SIGINT set an Event; this loop does
the rest): the pool stops taking work and finishes what it holds, within the grace; whatever it
still holds then is put back; only then is the heartbeat withdrawn.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid

import redis

from consumer_service.heartbeat import Heartbeat
from consumer_service.settings import ConsumerSettings
from exactsum import counters, transport
from exactsum.cluster import PartitionDirectory, connect, register_scripts
from exactsum.connection import FATAL_ERRORS, RetryAborted, retrying
from exactsum.counters import Event
from exactsum.events import NO_CONSUMER_EVENTS, ConsumerEvents
from exactsum.keys import Keys
from exactsum.metrics import ConsumerMetrics
from exactsum.transport.latency import write_stats

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
        self.wake = threading.Event()  # a signal or the pool's fatal error
        # Where Redis is: one primary at a URL, the one the Sentinels name, or a cluster.
        url, timeout = settings.redis, settings.socket_timeout
        self.directory = PartitionDirectory(self.keys, cluster=bool(url.cluster))
        self.control = connect(url, socket_timeout=timeout, name=f"{self.consumer_id}-ctl")
        self.scripts = register_scripts(self.control, min_replicas=settings.min_replicas,
                                        replica_timeout=settings.replica_timeout)
        self.metrics = (ConsumerMetrics(self.consumer_id, self.keys, url, settings.threads)
                        if settings.metrics_port else None)
        events: ConsumerEvents = self.metrics or NO_CONSUMER_EVENTS
        # On a Redis Cluster the heartbeat finds the partitions and the pool's workers claim
        # from them: both share one directory.
        self.pool = transport.get(settings.transport).pool(transport.ConsumerContext(
            settings, self.consumer_id, self.keys, self.scripts, events, on_fatal=self.wake.set,
            directory=self.directory,
        ))
        beat_client = connect(url, socket_timeout=min(timeout, settings.heartbeat_interval),
                              name=f"{self.consumer_id}-hb")
        self.heartbeat = Heartbeat(
            beat_client, self.keys, self.consumer_id, ttl=settings.heartbeat_ttl,
            threads=settings.threads, committed=lambda: self.pool.committed(beat_client),
            directory=self.directory,
        )

    def serve(self, stop: threading.Event) -> int:
        """Run until ``stop`` is set; return the exit status."""
        if self.metrics is not None:
            self.metrics.serve(self.settings.metrics_addr, self.settings.metrics_port)
        try:
            retrying(self.heartbeat.beat, "first heartbeat", log, stop=stop)
        except RetryAborted:
            return 0
        log.info("consumer %s: %s, heartbeat TTL %.1fs, on %s", self.consumer_id,
                 self.pool.describe(), self.settings.heartbeat_ttl, self.settings.redis.describe())
        if self.settings.id_file:
            with open(self.settings.id_file, "w", encoding="utf-8") as out:
                out.write(self.consumer_id + "\n")
        self.heartbeat.start()
        self.pool.start()

        def relay_stop() -> None:
            stop.wait()
            self.wake.set()

        threading.Thread(target=relay_stop, name="stop-relay", daemon=True).start()
        self.pool.run_until(self.wake)
        status = self.shutdown()
        error = self.pool.failure()
        if error is not None:
            if isinstance(error, FATAL_ERRORS):
                raise error
            return 1
        return status

    def shutdown(self) -> int:
        started, grace = time.monotonic(), self.settings.grace
        log.info("consumer %s: stopping; finishing in-flight batches (grace %.1fs)",
                 self.consumer_id, grace)
        # Leave a margin of the grace for giving back and withdrawing.
        given_back = self.pool.stop(finish_by=started + max(grace - 1.5, grace * 0.5),
                                    give_back_by=started + grace - 0.3)
        self.heartbeat.withdraw_until(started + grace - 0.1)
        committed = self._committed()
        counters.incr(Event.ELEMENTS_GIVEN_BACK, given_back)
        log.info("consumer %s: stopped after committing %d items; %d elements given back",
                 self.consumer_id, committed, given_back)
        if self.settings.stats_file:
            self._write_stats(committed, given_back)
        return 0

    def _committed(self) -> int:
        try:
            return self.pool.committed(self.control)
        except redis.RedisError as exc:  # only for the last log line: no retry
            log.warning("consumer %s: could not read the items committed: %s",
                        self.consumer_id, exc)
            return 0

    def _write_stats(self, committed: int, given_back: int) -> None:
        stats = self.pool.stats()
        if stats is None:
            return
        record = {"consumer": self.consumer_id, "threads": self.settings.threads,
                  "committed_items": committed, "given_back": given_back, **stats,
                  "counters": counters.COUNTERS.snapshot()}
        try:
            write_stats(self.settings.stats_file or "", record)
        except OSError as exc:
            log.error("consumer %s: could not write the stats file: %s", self.consumer_id, exc)
