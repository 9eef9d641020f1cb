"""A short chaos run (``python -m chaos``) in CI: every fault kind at least once, exact result.

The full run is ``make chaos`` (2,000,000 items, two minutes of faults); this one sums 250,000
items under about a minute of faults. The seed is random unless ``CHAOS_SEED`` is set, and it is
printed, so that a failure can be replayed with ``make chaos SEED=<seed> CHAOS_ARGS="--items
250000 --duration 60"``. The namespaced partition fault needs root and ``ip``; without them it
is skipped by the harness, and this test checks the other three kinds.

A second run does the same over the RQ transport (``--transport rq``): 105,000 items under 35 s
of faults, replayed with ``make chaos SEED=<seed> CHAOS_ARGS="--transport rq --items 105000
--duration 35"``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos import netns
from chaos.run import write_input

ITEMS = 250_000
DURATION = 60
# RQ: under a minute in all here; every kind is injected once in the first 26 s.
RQ_ITEMS = 105_000
RQ_DURATION = 35


def _chaos_run(tmp_path: Path, seed: int, args: list[str], wait: float) -> dict[str, Any]:
    """Run ``python -m chaos`` with ``args``; its JSON result, once it passed."""
    print(f"chaos seed {seed}")
    out_path = tmp_path / "result.json"
    log_path = tmp_path / "chaos.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chaos", "--seed", str(seed), *args,
             "--json-out", str(out_path)],
            stdout=log, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            status = proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            # SIGTERM lets the harness stop its processes and delete its namespaces.
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            pytest.fail(f"seed {seed}: the chaos run did not finish in time:\n"
                        f"{log_path.read_text(errors='replace')[-5000:]}")
    output = log_path.read_text(errors="replace")
    assert out_path.exists(), f"seed {seed}: no result:\n{output[-5000:]}"
    result: dict[str, Any] = json.loads(out_path.read_text())
    assert status == 0 and result["passed"], (
        f"seed {seed}: {result['failures']}\n{output[-8000:]}")
    return result


def input_sum(tmp_path: Path, seed: int, items: int) -> int:
    """The sum of the numbers the harness feeds the producer for ``seed``, computed here: the
    harness's input is a function of the seed, so a copy written here and summed line by line
    is the oracle, not the sum the harness reports."""
    path = tmp_path / "oracle-input.txt"
    write_input(path, items, seed)
    with path.open() as numbers:
        total = sum(int(line) for line in numbers)
    path.unlink()
    return total


def assert_chaos_exact(result: dict[str, Any], seed: int, items: int, expected_sum: int,
                       kinds: set[str], min_samples: int) -> None:
    """What every chaos run must show, whatever its transport: each of ``items`` counted exactly
    once with the sum ``expected_sum`` (the test's own oracle, :func:`input_sum`); a checker
    that sampled more than ``min_samples`` times and saw no violation persist; each of
    ``kinds`` (and the partition, where the host can make one) landed without failing; and the
    faults' marks: late returners (SIGSTOP, partition) had their stale commits refused, not
    counted, and the batches of dead or stopped consumers were put back."""
    assert result["committed"] == items, (seed, result["committed"])
    assert result["lost"] == 0 and result["duplicated"] == 0, seed
    assert result["sum"] == result["expected_sum"] == expected_sum, seed
    assert result["checker"]["persistent"] == [], seed
    assert result["checker"]["samples"] > min_samples, seed
    landed = {k["kind"]: k for k in result["kinds"]}
    expected = set(kinds)
    if netns.unavailable_reason() is None:
        expected.add("partition")
    assert expected <= set(landed), f"seed {seed}: {sorted(landed)}"
    for kind in expected:
        assert landed[kind]["landed"] >= 1 and landed[kind]["failed"] == 0, (seed, landed[kind])
    assert result["stale_commits"] > 0 and result["reclaimed"] > 0, seed


def _seed() -> int:
    return int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 10**9))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_short_chaos_run_counts_every_item_exactly_once(tmp_path: Path) -> None:
    seed = _seed()
    result = _chaos_run(tmp_path, seed, ["--items", str(ITEMS), "--duration", str(DURATION)],
                        wait=260)
    assert_chaos_exact(result, seed, ITEMS, input_sum(tmp_path, seed, ITEMS),
                       kinds={"sigkill", "sigstop", "redis", "producer"}, min_samples=50)
    assert result["retried"] > 0  # flaky failures went through retry.lua under the faults
    # The producer was SIGKILLed mid-push and resumed by the same command: one more attempt.
    assert result["producer_attempts"] >= 2


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_short_rq_chaos_run_counts_every_item_exactly_once(tmp_path: Path) -> None:
    """The same over the RQ transport, shorter (RQ moves far fewer items per second), with
    the RQ-only fault kind: one RQ worker process SIGKILLed in the middle of a job."""
    seed = _seed()
    result = _chaos_run(tmp_path, seed, ["--transport", "rq", "--items", str(RQ_ITEMS),
                                         "--duration", str(RQ_DURATION)], wait=120)
    assert result["transport"] == "rq"
    assert_chaos_exact(result, seed, RQ_ITEMS, input_sum(tmp_path, seed, RQ_ITEMS),
                       kinds={"sigkill", "sigstop", "redis", "rqworker"}, min_samples=30)
    assert result["dead_lettered"] == 0
    assert result["checker"]["transient"] == 0
