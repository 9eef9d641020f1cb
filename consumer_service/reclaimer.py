"""Puts the claims of dead consumers back on the queue; every live consumer runs one.

It finds in-flight lists by scanning for them rather than from a registry: a consumer that was
paused while its blocking claim was waiting still receives the element into its list after it
stopped answering, so only the lists themselves tell where elements are. A list whose owner has
no heartbeat is moved back whole by ``reclaim.lua``, which checks the heartbeat again inside the
same atomic step.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from exactsum.connection import RetryAborted, retrying
from exactsum.events import NO_CONSUMER_EVENTS, ConsumerEvents
from exactsum.keys import Keys
from exactsum.replication import NO_REPLICATION, Replication
from exactsum.runs import expire_finished_runs
from exactsum.scripts import Scripts

log = logging.getLogger("consumer.reclaimer")


class Reclaimer(threading.Thread):
    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: Scripts, consumer_id: str,
        *, interval: float, events: ConsumerEvents = NO_CONSUMER_EVENTS,
        replication: Replication = NO_REPLICATION,
    ) -> None:
        super().__init__(name="reclaimer", daemon=True)
        self.client, self.keys, self.scripts = client, keys, scripts
        self.consumer_id = consumer_id
        self.interval = interval
        self.events = events
        self.replication = replication
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
            for key in self.client.scan_iter(match=self.keys.inflight_pattern, count=1000,
                                             _type="list")
        ]
        owners = sorted({self.keys.inflight_owner(key) for key in lists} - {self.consumer_id})
        if not owners:
            self._forget_departed()
            return 0
        pipe = self.client.pipeline(transaction=False)
        for owner in owners:
            pipe.exists(self.keys.heartbeat(owner))
        dead = {owner for owner, alive in zip(owners, pipe.execute(), strict=True) if not alive}
        moved_total = 0
        for key in lists:
            owner = self.keys.inflight_owner(key)
            if owner not in dead:
                continue
            # Not acknowledged, the whole sweep is retried: a list already moved is empty then.
            moved = int(self.replication.script(
                self.scripts.reclaim,
                keys=[self.keys.heartbeat(owner), key, self.keys.queue, self.keys.reclaimed],
                args=["1"],
            ))
            if moved > 0:
                moved_total += moved
                self.events.on_reclaim(moved)
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
