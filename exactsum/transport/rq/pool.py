"""The RQ transport's pool (``--transport rq``): RQ worker processes and the RQ reclaimer.

The pool is ``--threads`` processes of ``exactsum.transport.rq.worker`` (RQ's SimpleWorker; see
there why processes). The consumer service's process watches them: a worker that exits while the
service runs is dead, its jobs are put back at once (the reclaimer's next pass is woken), and a
new worker takes its place, after a backoff that grows while workers keep dying young (at once
when the worker waited out an outage of Redis: a restart, a failover). Workers
are named ``<consumer id>.w<n>.<k>`` (:class:`~exactsum.keys.PoolWorkerName`), the k-th start
of slot n, so every consumer can tell whose they are.

Stop: every worker is asked to stop after its current job; those still running at
``finish_by`` are killed and their jobs put back.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import cast

import redis

from exactsum import counters
from exactsum.connection import RetryAborted, make_client, retrying
from exactsum.counters import Event
from exactsum.keys import PoolWorkerName
from exactsum.transport.base import ConsumerContext, ConsumerPool
from exactsum.transport.rq.reclaimer import RqReclaimer
from exactsum.transport.rq.settings import rq_settings
from exactsum.transport.rq.worker import CONFIG_ENV, EXIT_REDIS_BACK, WorkerConfig

log = logging.getLogger("consumer")

# The heartbeat's committed count covers this many of the latest runs.
RECENT_RUNS = 20
# A worker that lived this long before dying resets the backoff of its slot.
HEALTHY_AFTER_S = 30.0
BACKOFF_CAP_S = 10.0


@dataclass
class Slot:
    index: int
    starts: int = 0
    process: subprocess.Popen[bytes] | None = None
    name: str = ""
    started_at: float = 0.0
    restart_at: float = 0.0
    failures: int = 0


class RqPool(ConsumerPool):
    def __init__(self, ctx: ConsumerContext) -> None:
        settings, consumer_id = ctx.settings, ctx.consumer_id
        self.settings = settings
        self.queue = rq_settings(settings.transport_options).rq_queue
        self.consumer_id = consumer_id
        self.keys = ctx.keys
        self.slots = [Slot(i) for i in range(settings.threads)]
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self.reclaimer = RqReclaimer(
            make_client(settings.redis, socket_timeout=settings.socket_timeout,
                        name=f"{consumer_id}-reclaim"),
            self.keys, ctx.scripts, consumer_id, self.queue,
            interval=settings.reclaim_interval, is_dead_here=self._is_dead_here,
        )

    def describe(self) -> str:
        return f"{len(self.slots)} RQ workers on RQ queue {self.queue!r}"

    def committed(self, client: redis.Redis) -> int:
        return self._committed(client)

    def _committed(self, client: redis.Redis) -> int:
        """Items our workers committed, as the runs' per-consumer counts have them (the jobs run
        in other processes), over the latest runs: for the heartbeat's committed and rate."""
        run_ids = cast(list[bytes], client.zrevrange(self.keys.runs, 0, RECENT_RUNS - 1))
        pipe = client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hget(self.keys.run(run_id.decode()).by_consumer, self.consumer_id)
        return sum(int(n) for n in pipe.execute() if n is not None)

    def _is_dead_here(self, worker: str) -> bool | None:
        name = PoolWorkerName.parse(worker)
        if name is None or name.consumer != self.consumer_id:
            return None
        with self._lock:
            return worker not in self._live

    def start(self) -> None:
        self.reclaimer.start()

    def run_until(self, wake: threading.Event) -> None:
        self._tend()
        while not wake.wait(0.2):
            self._tend()

    def _tend(self) -> None:
        """Start what should run; notice workers that died."""
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and process.poll() is not None:
                lived = now - slot.started_at
                # A worker that outlived its Redis's outage (it waited until writes were taken
                # again) is started again at once: its death says nothing about the next one.
                healthy = lived >= HEALTHY_AFTER_S or process.returncode == EXIT_REDIS_BACK
                slot.failures = 0 if healthy else slot.failures + 1
                delay = min(BACKOFF_CAP_S, 0.5 * 2 ** (slot.failures - 1)) if slot.failures else 0
                delay *= random.uniform(0.5, 1.0)
                counters.incr(Event.RQ_WORKER_DIED)
                if process.returncode == EXIT_REDIS_BACK:
                    counters.incr(Event.RQ_WORKER_REDIS_BACK)
                counters.incr(Event.RQ_WORKER_RESTART_DELAYED if slot.failures
                              else Event.RQ_WORKER_RESTARTED_AT_ONCE)
                log.error("RQ worker %s (pid %d) exited with status %s after %.1fs; its jobs "
                          "are put back, a new worker starts in %.1fs", slot.name, process.pid,
                          process.returncode, lived, delay)
                self._forget(slot)
                slot.restart_at = now + delay
            if slot.process is None and now >= slot.restart_at:
                self._start(slot)

    def _forget(self, slot: Slot) -> None:
        with self._lock:
            self._live.discard(slot.name)
        slot.process = None
        self.reclaimer.wake.set()

    def _start(self, slot: Slot) -> None:
        slot.starts += 1
        slot.name = str(PoolWorkerName(self.consumer_id, slot.index, slot.starts))
        s = self.settings
        config = WorkerConfig(
            name=slot.name, consumer_id=self.consumer_id, parent_pid=os.getpid(),
            redis_url=s.redis_url, redis_sentinels=list(s.redis_sentinels or ()),
            redis_sentinel_master=s.redis_sentinel_master, key_prefix=s.key_prefix,
            queue=self.queue,
            log_level=s.log_level, log_format=s.log_format, fail_rate=s.fail_rate,
            flaky_rate=s.flaky_rate, work_cpu_us=s.work_cpu_us, work_io_ms=s.work_io_ms,
            min_replicas=s.min_replicas, replica_timeout=s.replica_timeout,
            counters_file=s.counters_file,
        )
        with self._lock:
            self._live.add(slot.name)
        slot.process = subprocess.Popen(
            [sys.executable, "-m", "exactsum.transport.rq.worker"],
            env={**os.environ, CONFIG_ENV: config.to_env()}, stdin=subprocess.DEVNULL,
        )
        slot.started_at = time.monotonic()
        counters.incr(Event.RQ_WORKER_STARTED)
        log.info("RQ worker %s started (pid %d)", slot.name, slot.process.pid)

    def stop(self, finish_by: float, give_back_by: float) -> int:
        running = [slot for slot in self.slots if slot.process is not None]
        for slot in running:
            assert slot.process is not None
            slot.process.send_signal(signal.SIGTERM)
        for slot in running:
            assert slot.process is not None
            try:
                slot.process.wait(timeout=max(0.0, finish_by - time.monotonic()))
            except subprocess.TimeoutExpired:
                counters.incr(Event.GRACE_OVERRUN)
                log.warning("RQ worker %s did not finish within the grace; killing it and "
                            "putting its job back", slot.name)
                slot.process.kill()
                slot.process.wait()
            self._forget(slot)
        self.reclaimer.stopping.set()
        self.reclaimer.wake.set()
        self.reclaimer.join(timeout=5)
        try:
            return int(retrying(self.reclaimer.reclaim_dead_workers, "put back jobs", log,
                                deadline=give_back_by))
        except RetryAborted:
            log.error("consumer %s: could not put back the jobs of killed workers; other "
                      "consumers do once the heartbeat lapses", self.consumer_id)
            return 0
