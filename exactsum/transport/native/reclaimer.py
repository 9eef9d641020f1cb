"""Puts the claims of dead consumers back on the queue; every live consumer runs one.

It finds in-flight lists by scanning for them rather than from a registry: a consumer that was
paused while its blocking claim was waiting still receives the element into its list after it
stopped answering, so only the lists themselves tell where elements are. A list whose owner has
no heartbeat is moved back whole by ``reclaim.lua``, which checks the heartbeat again inside the
same atomic step. On a Redis Cluster the lists of every partition are found by one SCAN of
each primary, and each is judged by its owner's heartbeat copy in the list's own partition.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from exactsum import counters
from exactsum.connection import RetryAborted, retrying
from exactsum.counters import Event
from exactsum.events import NO_CONSUMER_EVENTS, ConsumerEvents
from exactsum.keys import Keys
from exactsum.retention import expire_finished_runs
from exactsum.scripts import Scripts

log = logging.getLogger("consumer.reclaimer")


class Reclaimer(threading.Thread):
    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: Scripts, consumer_id: str,
        *, interval: float, events: ConsumerEvents = NO_CONSUMER_EVENTS, cluster: bool = False,
    ) -> None:
        super().__init__(name="reclaimer", daemon=True)
        self.client, self.keys, self.scripts = client, keys, scripts
        self.consumer_id = consumer_id
        self.interval = interval
        self.pattern = keys.partitioned_inflight_pattern if cluster else keys.inflight_pattern
        self.events = events
        self.stopping = threading.Event()
        self._next_retention = 0.0

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                retrying(self.sweep, "reclaim sweep", log, stop=self.stopping, cap=self.interval)
            except RetryAborted:
                return

    def sweep(self) -> int:
        """One pass over every in-flight list; returns the elements moved back."""
        lists = [
            key.decode()
            for key in self.client.scan_iter(match=self.pattern, count=1000, _type="list")
        ]
        # (partition, owner) of each list, our own left out.
        holders: dict[str, tuple[Keys, str]] = {}
        for key in lists:
            part = self.keys.partition_of_key(key)
            owner = part.inflight_owner(key)
            if owner != self.consumer_id:
                holders[key] = (part, owner)
        if not holders:
            self._forget_departed()
            return 0
        beats = sorted({part.heartbeat(owner) for part, owner in holders.values()})
        pipe = self.client.pipeline(transaction=False)
        for beat in beats:
            pipe.exists(beat)
        gone = {beat for beat, alive in zip(beats, pipe.execute(), strict=True) if not alive}
        moved_total = 0
        for key, (part, owner) in holders.items():
            if part.heartbeat(owner) not in gone:
                continue
            moved = int(self.scripts.reclaim(
                keys=[part.heartbeat(owner), key, part.queue, part.reclaimed],
                args=["1"],
            ))
            if moved > 0:
                moved_total += moved
                self.events.on_reclaim(moved)
                counters.incr(Event.ELEMENTS_RECLAIMED, moved)
                log.warning("reclaimed %d elements from %s: its heartbeat expired", moved, key)
        self._forget_departed()
        return moved_total

    def _forget_departed(self) -> None:
        """Drop consumers whose heartbeat lapsed long ago from the status registry, and give
        finished runs their retention time now and then."""
        cutoff = int((time.time() - 3600) * 1000)
        self.client.zremrangebyscore(self.keys.consumers, 0, cutoff)
        now = time.monotonic()
        if now >= self._next_retention:
            expire_finished_runs(self.client, self.keys)
            # Expiry is not urgent: one retention pass per ten sweeps.
            self._next_retention = now + 10 * self.interval
