"""Faults while consumers claim and commit many small batches per call (claim.lua, commit.lua
with several batches): a claim of dozens of elements is held, reclaimed and fenced as a whole."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from exactsum.counters import Event
from exactsum.keys import Keys
from tests.integration.test_pipeline import (
    QUICK_LIVENESS,
    finish,
    inflight_of,
    numbers_file,
    reclaimed,
)
from tests.procs import Proc, Services, assert_exact, committed, wait_until

ITEMS = 60_000


def stop_holding_several(proc: Proc, client: redis.Redis, keys: Keys, consumer_id: str) -> int:
    """SIGSTOP ``proc`` at a moment when it holds several claims; returns how many it holds."""
    for _ in range(50):
        proc.signal(signal.SIGSTOP)
        time.sleep(0.05)  # a claim already blocked in Redis may still land in the list
        held = inflight_of(client, keys, consumer_id)
        if held > 1:
            return held
        proc.signal(signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"{consumer_id} never held more than one claim")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigstop_a_consumer_holding_many_small_batches(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path, total = numbers_file(tmp_path, ITEMS)
    slow = ("--threads", "4", "--work-io-ms", "0.05", *QUICK_LIVENESS)
    consumers = [services.consumer(*slow) for _ in range(3)]
    sleeper_id = services.consumer_id(consumers[0])
    producer = services.producer("--input", str(path), "--batch", "2")
    wait_until(lambda: committed(client, keys) >= ITEMS // 5, 60, "a fifth committed")
    held = stop_holding_several(consumers[0], client, keys, sleeper_id)
    wait_until(lambda: reclaimed(client, keys) >= held, 15, "the sleeper's claims reclaimed")
    time.sleep(1.0)
    consumers[0].signal(signal.SIGCONT)
    report = finish(producer)
    assert_exact(report, ITEMS, total)
    # The late returner's commits of what was reclaimed from it counted nothing: fenced, or
    # already counted by whoever took the batches over.
    wait_until(lambda: consumers[0].counter(Event.COMMIT_FENCED)
               + consumers[0].counter(Event.COMMIT_ALREADY_COUNTED) >= 1, 10,
               "the late returner's refusal")
    assert consumers[0].popen.poll() is None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_a_consumer_holding_many_small_batches(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path, total = numbers_file(tmp_path, ITEMS)
    slow = ("--threads", "4", "--work-io-ms", "0.05", *QUICK_LIVENESS)
    consumers = [services.consumer(*slow) for _ in range(2)]
    victim_id = services.consumer_id(consumers[0])
    producer = services.producer("--input", str(path), "--batch", "1")
    wait_until(lambda: committed(client, keys) >= ITEMS // 5, 60, "a fifth committed")
    held = stop_holding_several(consumers[0], client, keys, victim_id)
    consumers[0].signal(signal.SIGKILL)
    services.consumer(*slow, name="replacement")
    wait_until(lambda: inflight_of(client, keys, victim_id) == 0, 15, "the reclaim")
    report = finish(producer)
    assert_exact(report, ITEMS, total)
    assert reclaimed(client, keys) >= held
