"""The consumer's heartbeat: a key with a TTL, refreshed on its own thread and connection.

It must not share a thread with the work: a CPU-bound batch would starve it and get the
consumer's claims reclaimed while it is alive and working.

On a Redis Cluster each partition has its own copy of the heartbeat, in the partition's slot, for
``reclaim.lua`` to check atomically with the move. The heartbeat also refreshes the list of
partitions (:class:`exactsum.cluster.PartitionDirectory`), and shows the workers a new partition
only after its copy is written, so no claim is ever made where our heartbeat is not.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from exactsum.cluster import PartitionDirectory
from exactsum.connection import RetryAborted, retrying
from exactsum.keys import Keys

log = logging.getLogger("consumer.heartbeat")

# Seconds between looks for partitions registered by a new run (Redis Cluster only).
PARTITION_LOOKUP_S = 0.25


class Heartbeat(threading.Thread):
    def __init__(
        self, client: redis.Redis, keys: Keys, consumer_id: str, *, ttl: float, threads: int,
        committed: Callable[[], int] | None = None,
        directory: PartitionDirectory | None = None,
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.client, self.keys, self.consumer_id = client, keys, consumer_id
        self.directory = directory or PartitionDirectory(keys, cluster=False)
        self.ttl_ms = int(ttl * 1000)
        self.interval = ttl / 3
        self.stopping = threading.Event()
        self.facts = {"host": socket.gethostname(), "pid": os.getpid(), "threads": threads,
                      "started": time.time()}
        self.info = json.dumps(self.facts)
        # For status and the dashboard: items committed so far and the rate since the last beat.
        self.committed = committed
        self._last = (time.monotonic(), 0)

    def _info(self) -> str:
        if self.committed is None:
            return self.info
        now, done = time.monotonic(), self.committed()
        then, before = self._last
        self._last = (now, done)
        # Never negative: a count read from Redis drops when an old run leaves its window.
        rate = max(0.0, (done - before) / (now - then)) if now > then else 0.0
        return json.dumps({**self.facts, "committed": done, "rate": round(rate, 1),
                           "at": time.time()})

    def beat(self) -> None:
        if not self.directory.cluster:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self.keys.heartbeat(self.consumer_id), self._info(), px=self.ttl_ms)
            pipe.zadd(self.keys.consumers, {self.consumer_id: int(time.time() * 1000)})
            pipe.execute()
            return
        tags = self.directory.lookup(self.client)
        # Keys in several slots: no transaction, each is written on its own primary.
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.heartbeat(self.consumer_id), self._info(), px=self.ttl_ms)
        pipe.zadd(self.keys.consumers, {self.consumer_id: int(time.time() * 1000)})
        for tag in tags:
            pipe.set(self.keys.partition(tag).heartbeat(self.consumer_id), "1", px=self.ttl_ms)
        pipe.execute()
        self.directory.publish(tags)

    def run(self) -> None:
        # On a cluster, look for new partitions more often than the heartbeat is due, so that a
        # new run's partitions are claimed from within a fraction of a second.
        tick = min(self.interval, PARTITION_LOOKUP_S) if self.directory.cluster else self.interval
        last = time.monotonic()
        while not self.stopping.wait(tick):
            try:
                if time.monotonic() - last < self.interval - tick / 2 and not retrying(
                        self._new_partitions, "partition lookup", log, stop=self.stopping,
                        cap=self.interval):
                    continue
                retrying(self.beat, "heartbeat", log, stop=self.stopping, cap=self.interval)
                last = time.monotonic()
            except RetryAborted:
                return

    def _new_partitions(self) -> bool:
        return len(self.directory.lookup(self.client)) > len(self.directory.tags)

    def withdraw(self) -> None:
        """Stop beating and say goodbye, so nobody waits for the TTL to reclaim nothing."""
        self.stopping.set()
        self.join(timeout=5)
        pipe = self.client.pipeline(transaction=not self.directory.cluster)
        pipe.delete(self.keys.heartbeat(self.consumer_id))
        pipe.zrem(self.keys.consumers, self.consumer_id)
        if self.directory.cluster:
            for tag in self.directory.tags:
                pipe.delete(self.keys.partition(tag).heartbeat(self.consumer_id))
        pipe.execute()

    def withdraw_until(self, deadline: float) -> None:
        """:meth:`withdraw`, retried until ``deadline``; if Redis stays away, the key expires by
        itself after its TTL."""
        try:
            retrying(self.withdraw, "withdraw heartbeat", log, deadline=deadline)
        except RetryAborted:
            log.warning("consumer %s: could not withdraw the heartbeat; it expires by itself",
                        self.consumer_id)
