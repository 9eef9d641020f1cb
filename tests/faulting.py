"""The set-up the fault tests share (tests/integration/test_pipeline.py and
test_faults_small_batches.py): a run of a file whose sum the test computed, started over
several consumers and under way when the fault lands, and what the tests read of its claims.

The fault itself (which signal, when, what it must leave behind) stays in each test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from exactsum.counters import Event
from exactsum.keys import Keys
from tests.procs import Proc, Services, assert_exact, committed, finish, numbers_file, wait_until

# Fast fault detection for tests; the defaults (5 s TTL) are exercised by the SIGKILL test.
QUICK_LIVENESS = ("--heartbeat-ttl", "2", "--block-timeout", "0.5", "--reclaim-interval", "0.5")


def inflight_of(client: redis.Redis, keys: Keys, consumer_id: str) -> int:
    """Elements ``consumer_id`` holds now, over all its threads' in-flight lists."""
    return sum(
        int(client.llen(key))
        for key in client.scan_iter(match=f"{keys.prefix}:inflight:{consumer_id}:*")
    )


def reclaimed(client: redis.Redis, keys: Keys) -> int:
    return int(client.get(keys.reclaimed) or 0)


@dataclass
class MidRun:
    """A run under way; its first consumer, ``target``, is the one the fault hits."""

    client: redis.Redis
    keys: Keys
    items: int
    total: int  # the oracle: the input file's sum, computed by numbers_file
    consumers: list[Proc]
    target_id: str
    producer: Proc

    @property
    def target(self) -> Proc:
        return self.consumers[0]

    def target_holds(self) -> int:
        return inflight_of(self.client, self.keys, self.target_id)

    def wait_target_holding(self, what: str) -> int:
        """Wait until the target holds claims, so the fault cannot miss them; how many."""
        wait_until(lambda: self.target_holds() > 0, 10, what)
        return self.target_holds()

    def finish_exact(self, timeout: float = 90) -> dict[str, Any]:
        """The producer's report, once it proved every item counted exactly once against the
        test's own sum."""
        report = finish(self.producer, timeout=timeout)
        assert_exact(report, self.items, self.total)
        return report


def start_mid_run(services: Services, client: redis.Redis, keys: Keys, tmp_path: Path, *,
                  items: int, consumer_args: tuple[str, ...], consumers: int = 3,
                  batch: int = 100) -> MidRun:
    """``consumers`` consumers started with ``consumer_args`` and a producer of ``items``
    numbers in batches of ``batch``; returns once a fifth is committed, so that the fault lands
    mid-run with every consumer busy."""
    path, total = numbers_file(tmp_path, items)
    procs = [services.consumer(*consumer_args) for _ in range(consumers)]
    target_id = services.consumer_id(procs[0])
    producer = services.producer("--input", str(path), "--batch", str(batch))
    wait_until(lambda: committed(client, keys) >= items // 5, 60, "a fifth committed")
    return MidRun(client, keys, items, total, procs, target_id, producer)


def wait_refused(late: Proc) -> None:
    """A late returner's commits were refused (fenced: reclaimed from it while it was away) or
    found their batch already counted by another consumer: either way, counted once."""
    wait_until(lambda: late.counter(Event.COMMIT_FENCED)
               + late.counter(Event.COMMIT_ALREADY_COUNTED) > 0, 10, "the late returner's refusal")
