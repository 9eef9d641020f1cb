"""The chaos harness' own parts, fast: the checker must see a lost or doubled batch, and a seed
must give the same fault schedule. Without this, a green chaos run could mean a blind checker."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis

from chaos.checker import bits, take_snapshot, violations
from chaos.episodes import KINDS, schedule
from chaos.report import ChaosResult, result_table
from chaos.rqview import take_rq_snapshot
from exactsum.keys import Keys, RqKeys, job_id
from exactsum.protocol import encode
from exactsum.runs import RunPlan, create_run
from exactsum.scripts import Scripts


def _state(client: redis.Redis, keys: Keys, scripts: Scripts) -> list[bytes]:
    """Run r1, 4 batches of 2: batch 0 committed, 1 claimed, 2 and 3 queued."""
    create_run(client, keys, RunPlan("r1", 8, 2), "test")
    elements = [encode("r1", s, [s, 1]) for s in range(4)]
    args: list[object] = [0, 1]
    for seq, element in enumerate(elements):
        args += [seq, element]
    scripts.push(keys=[keys.queue, keys.run("r1").pushed, keys.run("r1").meta], args=args)
    rk = keys.run("r1")
    for thread in (0, 1):
        client.lmove(keys.queue, keys.inflight("c1", thread), "RIGHT", "LEFT")
    client.set(keys.heartbeat("c1"), "{}", px=60_000)
    status = scripts.commit(
        keys=[keys.inflight("c1", 0), rk.meta, rk.done, rk.sum, rk.committed, rk.by_consumer,
              rk.stale],
        args=["c1", elements[0], 0, 2, 1])
    assert status[0] == 1
    return elements


def _found(client: redis.Redis, keys: Keys) -> dict[tuple[str, str], str]:
    return violations(take_snapshot(client, keys, ["r1"]), {}, {})


def test_a_consistent_state_has_no_violation(client: redis.Redis, keys: Keys,
                                             scripts: Scripts) -> None:
    _state(client, keys, scripts)
    snap = take_snapshot(client, keys, ["r1"])
    state = snap.runs["r1"]
    assert (state.pushed, state.done) == ({0, 1, 2, 3}, {0})
    assert (state.queue_items, state.inflight_items, state.committed) == (4, 2, 2)
    assert snap.holders == {"c1": 1} and snap.orphans == {}
    assert violations(snap, {}, {}) == {}


def test_the_checker_sees_a_lost_batch(client: redis.Redis, keys: Keys,
                                       scripts: Scripts) -> None:
    _state(client, keys, scripts)
    client.rpop(keys.queue)  # batch 2 vanishes
    found = _found(client, keys)
    assert ("r1", "lost:2") in found and ("r1", "conservation") in found


def test_the_checker_sees_a_batch_in_two_places(client: redis.Redis, keys: Keys,
                                                scripts: Scripts) -> None:
    elements = _state(client, keys, scripts)
    client.lpush(keys.queue, elements[0])  # a committed batch back on the queue
    found = _found(client, keys)
    assert ("r1", "twice:0") in found


def test_the_checker_sees_a_double_count_and_a_lost_bit(client: redis.Redis, keys: Keys,
                                                        scripts: Scripts) -> None:
    _state(client, keys, scripts)
    seen_pushed: dict[str, set[int]] = {}
    seen_done: dict[str, set[int]] = {}
    assert violations(take_snapshot(client, keys, ["r1"]), seen_pushed, seen_done) == {}
    client.incrby(keys.run("r1").committed, 2)
    client.setbit(keys.run("r1").done, 0, 0)
    found = violations(take_snapshot(client, keys, ["r1"]), seen_pushed, seen_done)
    assert ("r1", "double") in found and ("r1", "done-bit-lost") in found


def test_orphaned_claims_are_reported(client: redis.Redis, keys: Keys,
                                      scripts: Scripts) -> None:
    _state(client, keys, scripts)
    client.delete(keys.heartbeat("c1"))
    assert take_snapshot(client, keys, ["r1"]).orphans == {"c1": 1}


def test_bits_reads_redis_bitmaps(client: redis.Redis, keys: Keys) -> None:
    for offset in (0, 7, 8, 100):
        client.setbit(keys.queue, offset, 1)
    assert bits(bytes(client.get(keys.queue) or b"")) == {0, 7, 8, 100}


def test_a_seed_replays_its_schedule_with_every_kind_early() -> None:
    first = schedule(42, 60, list(KINDS), 2.0)
    assert first == schedule(42, 60, list(KINDS), 2.0)
    assert first != schedule(43, 60, list(KINDS), 2.0)
    assert {e.kind for e in first[:len(KINDS)]} == set(KINDS)
    assert all(e.at < 60 for e in first) and first[len(KINDS) - 1].at < 32
    redis_kills = [e for e in first if e.kind == "redis"]
    for a, b in itertools.pairwise(redis_kills):
        assert b.at >= a.at + a.hold  # one Redis outage at a time


@pytest.fixture
def rq_queue(client: redis.Redis, keys: Keys) -> Iterator[str]:
    """An RQ queue of the test's own; RQ's keys are not under the key prefix: deleted here."""
    yield keys.prefix
    client.delete(RqKeys(keys.prefix).started)
    for key in client.scan_iter(match=RqKeys.execution(f"{keys.prefix}-*")):
        client.delete(key)


def _rq_state(client: redis.Redis, keys: Keys, scripts: Scripts, queue: str) -> None:
    """Run r1 over RQ, 4 batches of 2: batch 0 committed, 1 being run by c1's worker, 2 and 3
    waiting; batch 3's worker died after its commit, leaving its execution in RQ's registry."""
    create_run(client, keys, RunPlan("r1", 8, 2), "test")
    rk, rq = keys.run("r1"), RqKeys(queue)
    for seq in range(4):
        client.hset(rk.batches, str(seq), encode("r1", seq, [seq, 1]))
        client.setbit(rk.pushed, seq, 1)
    commit_keys = [rk.meta, rk.done, rk.sum, rk.committed, rk.by_consumer, rk.stale, rk.batches,
                   rk.leases]
    assert scripts.commit_job(keys=commit_keys, args=["c1", 0, 2, 1, "0"]) == 1
    for seq, execution in ((1, "e1"), (3, "e3")):
        member = f"{job_id(keys.prefix, 'r1', seq)}:{execution}"
        client.zadd(rq.started, {member: 1})
        client.hset(RqKeys.execution(member), "worker_name", f"c1.w{seq}.1")
    assert scripts.commit_job(keys=commit_keys, args=["c1", 3, 2, 4, "0"]) == 1
    client.set(keys.heartbeat("c1"), "{}", px=60_000)


def test_the_rq_snapshot_sees_unresolved_and_done_batches(
    client: redis.Redis, keys: Keys, scripts: Scripts, rq_queue: str,
) -> None:
    _rq_state(client, keys, scripts, rq_queue)
    snap = take_rq_snapshot(client, keys, ["r1"], queue=rq_queue)
    state = snap.runs["r1"]
    assert (state.pushed, state.done, set(state.queue)) == ({0, 1, 2, 3}, {0, 3}, {1, 2})
    assert (state.queue_items, state.committed) == (4, 4)
    assert snap.holders == {"c1": 1}  # the execution of resolved batch 3 holds nothing
    assert violations(snap, {}, {}) == {}
    client.delete(keys.heartbeat("c1"))
    assert take_rq_snapshot(client, keys, ["r1"], queue=rq_queue).orphans == {"c1": 1}


def test_the_rq_checker_sees_a_lost_and_a_doubled_batch(
    client: redis.Redis, keys: Keys, scripts: Scripts, rq_queue: str,
) -> None:
    _rq_state(client, keys, scripts, rq_queue)
    rk = keys.run("r1")
    client.hdel(rk.batches, "2")  # batch 2 vanishes
    client.hset(rk.batches, "0", b"x")  # committed batch 0 unresolved again
    found = violations(take_rq_snapshot(client, keys, ["r1"], queue=rq_queue), {}, {})
    assert ("r1", "lost:2") in found and ("r1", "twice:0") in found
    assert "unresolved 1" in found[("r1", "twice:0")]


@pytest.mark.timeout(10)
def test_the_report_names_each_transports_own_mechanisms() -> None:
    # The words come from the transport's chaos view, not from an `if` on its name.
    native = result_table(ChaosResult(1, "native", 10, 2, 2, 5.0, reclaimed=3))
    rq = result_table(ChaosResult(1, "rq", 10, 2, 2, 5.0, reclaimed=3))
    assert "| seed | 1 |" in native and "| seed | 1 (transport rq) |" in rq
    assert "3 elements moved back from dead or absent consumers" in native
    assert "3 jobs of dead workers put back on RQ's queue by reclaim_job.lua" in rq
    assert "(retry.lua put the batch back on the queue)" in native
    assert "(RQ retried the job)" in rq
    assert "by commit.lua;" in native and "by commit_job.lua;" in rq
