"""The native transport's pool: worker threads that claim from the queue list, and a reclaimer.

Stop order: the threads stop claiming and finish what they hold until ``finish_by``; whatever is
still claimed then goes back on the queue (``reclaim.lua`` on our own lists).
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial

import redis

from exactsum import counters
from exactsum.cluster import PartitionDirectory, connect
from exactsum.connection import RetryAborted, retrying
from exactsum.counters import Event
from exactsum.transport.base import ConsumerContext, ConsumerPool
from exactsum.transport.failures import FailureInjector
from exactsum.transport.latency import LatencyHistogram
from exactsum.transport.native.reclaimer import Reclaimer
from exactsum.transport.native.worker import Worker

log = logging.getLogger("consumer")


class ThreadPool(ConsumerPool):
    def __init__(self, ctx: ConsumerContext) -> None:
        s, cid = ctx.settings, ctx.consumer_id
        self.ctx = ctx
        self.keys, self.scripts = ctx.keys, ctx.scripts
        self.stop_claiming = threading.Event()
        self.halt = threading.Event()
        url, timeout = s.redis, s.socket_timeout
        make_client = connect
        # On a Redis Cluster the threads claim from every partition the heartbeat has found.
        self.directory = ctx.directory or PartitionDirectory(ctx.keys, cluster=False)
        self.reclaimer = Reclaimer(
            make_client(url, socket_timeout=timeout, name=f"{cid}-reclaim"),
            ctx.keys, ctx.scripts, cid, interval=s.reclaim_interval, events=ctx.events,
            cluster=self.directory.cluster,
        )
        self.workers = [
            Worker(
                make_client(url, socket_timeout=timeout, name=f"{cid}-w{i}"),
                ctx.keys, ctx.scripts, cid, i,
                block_timeout=s.block_timeout, stop_claiming=self.stop_claiming,
                halt=self.halt, work_cpu_us=s.work_cpu_us,
                work_io_ms=s.work_io_ms, max_claim=s.max_claim,
                failures=FailureInjector(s.fail_rate, s.flaky_rate),
                max_attempts=s.max_attempts, on_fatal=ctx.on_fatal, events=ctx.events,
                directory=self.directory, replication=s.replication,
            )
            for i in range(s.threads)
        ]

    def describe(self) -> str:
        serving = (f"the partitions of a Redis Cluster ({len(self.directory.tags)} so far)"
                   if self.directory.cluster else self.keys.queue)
        return f"{len(self.workers)} threads, serving {serving}"

    def start(self) -> None:
        self.reclaimer.start()
        for worker in self.workers:
            worker.start()

    def committed(self, client: redis.Redis) -> int:
        return sum(w.committed_items for w in self.workers)

    def failure(self) -> BaseException | None:
        return next((w.error for w in self.workers if w.error is not None), None)

    def stats(self) -> dict[str, object]:
        return {"latency": LatencyHistogram.merged(w.latency for w in self.workers).summary()}

    def stop(self, finish_by: float, give_back_by: float) -> int:
        self.stop_claiming.set()
        self.reclaimer.stopping.set()
        for worker in self.workers:
            worker.join(timeout=max(0.0, finish_by - time.monotonic()))
        self.halt.set()
        still_busy = [w.name for w in self.workers if w.is_alive()]
        if still_busy:
            counters.incr(Event.GRACE_OVERRUN, len(still_busy))
            log.warning("consumer %s: %s did not finish within the grace; giving their batches "
                        "back", self.ctx.consumer_id, ", ".join(still_busy))
        moved = self._give_back(give_back_by)
        if still_busy:
            # A thread that was blocked in BLMOVE when the grace ended still receives an element
            # if one arrives before its timeout (another consumer's give-back, a new push), after
            # the give-back above. Its claim ends within --block-timeout: wait that long (never
            # past the give-back deadline), then give back again, so no claim is left behind.
            last_claim = min(give_back_by, time.monotonic() + self.ctx.settings.block_timeout + 0.5)
            for worker in self.workers:
                worker.join(timeout=max(0.0, last_claim - time.monotonic()))
            moved += self._give_back(give_back_by)
        return moved

    def _give_back(self, deadline: float) -> int:
        """Put every element still in our in-flight lists back on the queue."""
        moved = 0
        for worker in self.workers:
            # On a cluster a thread has an in-flight list in each partition it claimed from.
            for part, inflight in worker.inflight_lists():
                keys = [part.heartbeat(self.ctx.consumer_id), inflight, part.queue,
                        part.reclaimed]
                try:
                    moved += int(retrying(partial(self.scripts.reclaim, keys=keys, args=["0"]),
                                          "give back", log, deadline=deadline))
                except RetryAborted:
                    log.error("consumer %s: could not give back %s; other consumers reclaim "
                              "it once the heartbeat lapses", self.ctx.consumer_id, inflight)
        return moved
