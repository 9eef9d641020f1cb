"""A short chaos run over a Redis Cluster (``python -m chaos --redis cluster``): three primaries
with a replica each, the run in six partitions, ``--min-replicas 1``; consumer SIGKILL and
SIGSTOP, the producer SIGKILLed and resumed, and a primary kill -9'd and failed over by the
cluster. Exact against the sum computed here from the seed's input.

The seed is random unless ``CHAOS_SEED`` is set, and printed; replay with ``make chaos
SEED=<seed> CHAOS_ARGS="--redis cluster --items 150000 --duration 30"``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.test_chaos import _chaos_run, _seed, input_sum

ITEMS = 150_000
DURATION = 30
KINDS = {"sigkill", "sigstop", "producer", "failover"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_short_chaos_run_over_a_redis_cluster_counts_every_item_exactly_once(
    tmp_path: Path,
) -> None:
    seed = _seed()
    result = _chaos_run(tmp_path, seed, ["--redis", "cluster", "--items", str(ITEMS),
                                         "--duration", str(DURATION)], wait=240)
    assert result["redis"] == "cluster"
    assert result["committed"] == ITEMS
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["dead_lettered"] == 0
    assert result["sum"] == result["expected_sum"] == input_sum(tmp_path, seed, ITEMS)
    assert result["checker"]["persistent"] == [] and result["checker"]["transient"] == 0
    assert result["checker"]["samples"] > 30
    kinds = {k["kind"]: k for k in result["kinds"]}
    assert set(kinds) == KINDS, f"seed {seed}: {sorted(kinds)}"
    for kind in KINDS:
        assert kinds[kind]["landed"] >= 1 and kinds[kind]["failed"] == 0, (seed, kinds[kind])
    # The failover: a replica promoted, commits resumed on it, the old primary back as a replica.
    assert kinds["failover"]["recover"] and kinds["failover"]["back"], kinds["failover"]
    assert set(result["disabled"]) == {"redis", "partition"}
    assert result["stale_commits"] > 0 and result["reclaimed"] > 0
    assert result["producer_attempts"] >= 2


@pytest.mark.timeout(60)
def test_rq_on_a_redis_cluster_is_refused_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "chaos", "--transport", "rq", "--redis",
                           "cluster"], capture_output=True, text=True, timeout=50,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "chaos: --transport rq --redis cluster: RQ's keys cannot be put in one hash slot per "
        "job (CROSSSLOT), so RQ cannot run on Redis Cluster"]
