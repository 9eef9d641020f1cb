"""Faults while consumers claim and commit many small batches per call (claim.lua, commit.lua
with several batches): a claim of dozens of elements is held, reclaimed and fenced as a whole."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from exactsum.keys import Keys
from tests.faulting import QUICK_LIVENESS, MidRun, reclaimed, start_mid_run, wait_refused
from tests.procs import Services, wait_until

ITEMS = 60_000
SLOW = ("--threads", "4", "--work-io-ms", "0.05", *QUICK_LIVENESS)


def stop_holding_several(run: MidRun) -> int:
    """SIGSTOP the run's target at a moment when it holds several claims; how many it holds."""
    for _ in range(50):
        run.target.signal(signal.SIGSTOP)
        time.sleep(0.05)  # a claim already blocked in Redis may still land in the list
        held = run.target_holds()
        if held > 1:
            return held
        run.target.signal(signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"{run.target_id} never held more than one claim")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigstop_a_consumer_holding_many_small_batches(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    run = start_mid_run(services, client, keys, tmp_path, items=ITEMS, consumer_args=SLOW,
                        batch=2)
    held = stop_holding_several(run)
    wait_until(lambda: reclaimed(client, keys) >= held, 15, "the sleeper's claims reclaimed")
    time.sleep(1.0)
    run.target.signal(signal.SIGCONT)
    run.finish_exact()
    wait_refused(run.target)
    assert run.target.popen.poll() is None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_a_consumer_holding_many_small_batches(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    run = start_mid_run(services, client, keys, tmp_path, items=ITEMS, consumer_args=SLOW,
                        consumers=2, batch=1)
    held = stop_holding_several(run)
    run.target.signal(signal.SIGKILL)
    services.consumer(*SLOW, name="replacement")
    wait_until(lambda: run.target_holds() == 0, 15, "the reclaim")
    run.finish_exact()
    assert reclaimed(client, keys) >= held
