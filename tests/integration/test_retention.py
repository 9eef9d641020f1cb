"""Retention of a finished run's keys, when no consumer saw the run while its meta was there.

Found by the soak (python -m chaos.soak): with a retention shorter than the consumers' retention
pass (ten reclaim sweeps), the producer's meta expired first, the consumers forgot the run, and
its sum, counters, bitmap and per-consumer hash stayed in Redis for ever.
"""

from __future__ import annotations

import redis

from exactsum.keys import Keys
from exactsum.retention import expire_finished_runs
from exactsum.runs import RunPlan, create_run, set_state


def _finished_run(client: redis.Redis, keys: Keys, run_id: str) -> list[str]:
    create_run(client, keys, RunPlan(run_id, 10, 5), "test-producer")
    set_state(client, keys, run_id, "verified", retention_s=3600)
    rk = keys.run(run_id)
    client.set(rk.sum, 55)
    client.set(rk.committed, 10)
    client.setbit(rk.done, 1, 1)
    client.hset(rk.by_consumer, "c1", 10)
    return [rk.sum, rk.committed, rk.done, rk.by_consumer]


def test_a_finished_run_gets_its_retention(client: redis.Redis, keys: Keys) -> None:
    written = _finished_run(client, keys, "r1")
    assert expire_finished_runs(client, keys) == 0
    assert all(0 < int(client.ttl(k)) <= 3600 for k in written)


def test_a_run_whose_meta_expired_unseen_does_not_leave_its_keys_behind(
    client: redis.Redis, keys: Keys
) -> None:
    written = _finished_run(client, keys, "r1")
    client.delete(keys.run("r1").meta)  # its retention passed before any consumer looked
    assert expire_finished_runs(client, keys) == 1
    assert client.zcard(keys.runs) == 0
    assert all(0 < int(client.pttl(k)) <= 1000 for k in written)


def test_a_running_run_keeps_its_keys(client: redis.Redis, keys: Keys) -> None:
    create_run(client, keys, RunPlan("r2", 10, 5), "test-producer")
    client.set(keys.run("r2").sum, 5)
    assert expire_finished_runs(client, keys) == 0
    assert int(client.ttl(keys.run("r2").sum)) == -1
