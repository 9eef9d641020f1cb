"""The Lua scripts alone, against a real Redis: push, claim, commit, re-sent commit, fencing,
reclaim and dead letters. Each test states the exact counters it expects."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from exactsum.audit import audit
from exactsum.keys import Keys
from exactsum.protocol import encode
from exactsum.runs import RunPlan, create_run
from exactsum.scripts import Scripts

CONSUMER = "c1"


def make_run(client: redis.Redis, keys: Keys, run_id: str = "r1", items: int = 6,
             batch: int = 3) -> RunPlan:
    plan = RunPlan(run_id, items, batch)
    create_run(client, keys, plan, "test")
    return plan


def push(scripts: Scripts, keys: Keys, run_id: str, pairs: list[tuple[int, bytes]],
         bound: int = 0, epoch: int = 1) -> int:
    args: list[object] = [bound, epoch]
    for seq, element in pairs:
        args += [seq, element]
    rk = keys.run(run_id)
    return int(scripts.push(keys=[keys.queue, rk.pushed, rk.meta], args=args))


def claim(client: redis.Redis, keys: Keys, thread: int = 0, owner: str = CONSUMER) -> bytes:
    element = client.lmove(keys.queue, keys.inflight(owner, thread), "RIGHT", "LEFT")
    assert element is not None
    return bytes(element)


def commit(scripts: Scripts, keys: Keys, element: bytes, seq: int, values: list[int],
           thread: int = 0, owner: str = CONSUMER, run_id: str = "r1") -> tuple[int, int]:
    statuses, left = commit_many(scripts, keys, [(element, seq, values)], thread, owner, run_id)
    return statuses[0], left


def commit_many(scripts: Scripts, keys: Keys, batches: list[tuple[bytes, int, list[int]]],
                thread: int = 0, owner: str = CONSUMER,
                run_id: str = "r1") -> tuple[list[int], int]:
    rk = keys.run(run_id)
    args: list[object] = [owner]
    for element, seq, values in batches:
        args += [element, seq, len(values), sum(values)]
    reply = scripts.commit(
        keys=[keys.inflight(owner, thread), rk.meta, rk.done, rk.sum, rk.committed,
              rk.by_consumer, rk.stale],
        args=args,
    )
    return [int(status) for status in reply[:-1]], int(reply[-1])


def claim_many(scripts: Scripts, keys: Keys, n: int, thread: int = 0,
               owner: str = CONSUMER) -> list[bytes]:
    return [bytes(e) for e in scripts.claim(keys=[keys.queue, keys.inflight(owner, thread)],
                                            args=[n])]


def reclaim(scripts: Scripts, keys: Keys, owner: str, thread: int = 0,
            require_dead: bool = True) -> int:
    return int(scripts.reclaim(
        keys=[keys.heartbeat(owner), keys.inflight(owner, thread), keys.queue, keys.reclaimed],
        args=["1" if require_dead else "0"],
    ))


def counters(client: redis.Redis, keys: Keys, run_id: str = "r1") -> tuple[int, int]:
    rk = keys.run(run_id)
    return int(client.get(rk.committed) or 0), int(client.get(rk.sum) or 0)


def test_push_is_idempotent_and_bounded(client: redis.Redis, keys: Keys,
                                        scripts: Scripts) -> None:
    make_run(client, keys)
    e0, e1, e2 = (encode("r1", s, [s, s]) for s in range(3))
    assert push(scripts, keys, "r1", [(0, e0), (1, e1)]) == 2
    # A re-sent push (the reply was lost) adds nothing.
    assert push(scripts, keys, "r1", [(0, e0), (1, e1)]) == 2
    assert client.lrange(keys.queue, 0, -1) == [e1, e0]
    # The bound stops at the first batch that does not fit, and says how far it got.
    assert push(scripts, keys, "r1", [(1, e1), (2, e2)], bound=2) == 1
    assert client.llen(keys.queue) == 2
    client.rpop(keys.queue)
    assert push(scripts, keys, "r1", [(2, e2)], bound=2) == 1
    assert client.llen(keys.queue) == 2


def test_push_of_a_producer_whose_epoch_is_past_is_fenced(
        client: redis.Redis, keys: Keys, scripts: Scripts) -> None:
    make_run(client, keys)
    e0, e1 = (encode("r1", s, [s, s]) for s in range(2))
    assert push(scripts, keys, "r1", [(0, e0)], epoch=1) == 1
    client.hincrby(keys.run("r1").meta, "epoch", 1)  # another producer resumed the run
    assert push(scripts, keys, "r1", [(1, e1)], epoch=1) == -1
    assert client.lrange(keys.queue, 0, -1) == [e0]
    assert client.getbit(keys.run("r1").pushed, 1) == 0
    assert push(scripts, keys, "r1", [(0, e0), (1, e1)], epoch=2) == 2
    assert client.lrange(keys.queue, 0, -1) == [e1, e0]
    # A run with no meta has no owner: nothing is pushed for it.
    assert push(scripts, keys, "nometa", [(0, e0)], epoch=1) == -1


def test_commit_counts_once_and_a_resent_commit_is_refused(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    make_run(client, keys)
    element = encode("r1", 0, [4, 5, 6])
    push(scripts, keys, "r1", [(0, element)])
    assert claim(client, keys) == element
    assert commit(scripts, keys, element, 0, [4, 5, 6]) == (1, 0)
    assert counters(client, keys) == (3, 15)
    assert client.llen(keys.inflight(CONSUMER, 0)) == 0
    # The same commit again, as redis-py or our retry loop would re-send it: not counted.
    assert commit(scripts, keys, element, 0, [4, 5, 6]) == (0, 0)
    assert counters(client, keys) == (3, 15)
    assert client.hgetall(keys.run("r1").by_consumer) == {CONSUMER.encode(): b"3"}
    assert int(client.get(keys.run("r1").stale) or 0) == 1


def test_a_duplicate_element_is_dropped_not_counted(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    make_run(client, keys)
    element = encode("r1", 0, [1, 2, 3])
    client.lpush(keys.queue, element, element)  # as if pushed twice by a buggy producer
    first = claim(client, keys, thread=0)
    second = claim(client, keys, thread=1)
    assert commit(scripts, keys, first, 0, [1, 2, 3], thread=0)[0] == 1
    assert commit(scripts, keys, second, 0, [1, 2, 3], thread=1) == (0, 0)
    assert counters(client, keys) == (3, 6)
    assert client.llen(keys.inflight(CONSUMER, 1)) == 0


def test_reclaim_waits_for_the_heartbeat_to_lapse(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    make_run(client, keys)
    element = encode("r1", 0, [7, 8, 9])
    push(scripts, keys, "r1", [(0, element)])
    claim(client, keys, owner="dead")
    client.set(keys.heartbeat("dead"), "{}", px=60_000)
    assert reclaim(scripts, keys, "dead") == -1
    assert client.llen(keys.queue) == 0
    client.delete(keys.heartbeat("dead"))
    assert reclaim(scripts, keys, "dead") == 1
    assert client.lrange(keys.queue, 0, -1) == [element]
    assert int(client.get(keys.reclaimed) or 0) == 1


def test_a_late_returner_is_fenced_and_the_new_owner_counts(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    make_run(client, keys)
    element = encode("r1", 0, [10, 20, 30])
    push(scripts, keys, "r1", [(0, element)])
    claim(client, keys, owner="late")
    assert reclaim(scripts, keys, "late") == 1  # no heartbeat: it looks dead
    claim(client, keys, owner="new")
    # The late returner wakes up and commits: refused, nothing written.
    assert commit(scripts, keys, element, 0, [10, 20, 30], owner="late") == (-1, 0)
    assert counters(client, keys) == (0, 0)
    assert commit(scripts, keys, element, 0, [10, 20, 30], owner="new") == (1, 0)
    assert counters(client, keys) == (3, 60)
    # And if the late one had committed first, the new owner's commit would be refused instead.
    assert commit(scripts, keys, element, 0, [10, 20, 30], owner="late") == (0, 0)
    assert counters(client, keys) == (3, 60)


def test_commit_reports_what_is_left_in_the_inflight_list(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    make_run(client, keys)
    a, b = encode("r1", 0, [1, 1, 1]), encode("r1", 1, [2, 2, 2])
    push(scripts, keys, "r1", [(0, a), (1, b)])
    claim(client, keys)
    claim(client, keys)  # a claim whose reply was "lost": the thread does not know of it
    status, left = commit(scripts, keys, a, 0, [1, 1, 1])
    assert (status, left) == (1, 1)


def test_unknown_run_and_overflow_write_nothing(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    stranger = encode("nosuchrun", 0, [1])
    client.lpush(keys.queue, stranger)
    claim(client, keys)
    assert commit(scripts, keys, stranger, 0, [1], run_id="nosuchrun") == (-2, 1)
    assert client.exists(keys.run("nosuchrun").sum) == 0

    make_run(client, keys, "big", items=2, batch=1)
    client.set(keys.run("big").sum, 2**63 - 5)
    element = encode("big", 0, [10])
    client.lpush(keys.queue, element)
    claim(client, keys, thread=1)
    status, left = commit(scripts, keys, element, 0, [10], thread=1, run_id="big")
    assert (status, left) == (-3, 1)
    assert int(client.get(keys.run("big").sum) or 0) == 2**63 - 5
    assert client.get(keys.run("big").committed) is None
    assert client.getbit(keys.run("big").done, 0) == 0


def test_claim_moves_up_to_n_elements_oldest_first(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    make_run(client, keys, items=9, batch=3)
    elements = [encode("r1", s, [s, s, s]) for s in range(3)]
    push(scripts, keys, "r1", list(enumerate(elements)))
    assert claim_many(scripts, keys, 2) == elements[:2]
    # The list is pushed on the left like the queue: oldest claim on the right.
    assert client.lrange(keys.inflight(CONSUMER, 0), 0, -1) == [elements[1], elements[0]]
    assert claim_many(scripts, keys, 5) == elements[2:]
    assert claim_many(scripts, keys, 5) == []
    assert client.llen(keys.queue) == 0
    assert client.llen(keys.inflight(CONSUMER, 0)) == 3


def test_commit_of_several_batches_judges_each_on_its_own(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    """One call, four batches: counted, already counted, fenced, and a duplicate in the call."""
    make_run(client, keys, items=12, batch=3)
    e = [encode("r1", s, [s + 1] * 3) for s in range(4)]
    push(scripts, keys, "r1", list(enumerate(e)))
    assert claim_many(scripts, keys, 4) == e
    assert commit(scripts, keys, e[1], 1, [2, 2, 2]) == (1, 3)  # counted earlier, alone
    client.lrem(keys.inflight(CONSUMER, 0), 1, e[2])  # reclaimed while we were away
    client.lpush(keys.inflight(CONSUMER, 0), e[1])  # a stray copy of a counted batch
    statuses, left = commit_many(
        scripts, keys,
        [(e[0], 0, [1, 1, 1]), (e[1], 1, [2, 2, 2]), (e[2], 2, [3, 3, 3]),
         (e[3], 3, [4, 4, 4]), (e[3], 3, [4, 4, 4])],
    )
    assert (statuses, left) == ([1, 0, -1, 1, 0], 0)
    assert counters(client, keys) == (9, 3 + 6 + 12)
    assert client.hgetall(keys.run("r1").by_consumer) == {CONSUMER.encode(): b"9"}
    assert int(client.get(keys.run("r1").stale) or 0) == 3
    assert [client.getbit(keys.run("r1").done, s) for s in range(4)] == [1, 1, 0, 1]


def test_an_overflow_in_a_call_of_several_refuses_only_that_batch(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    make_run(client, keys, items=3, batch=1)
    client.set(keys.run("r1").sum, 2**63 - 10)
    e = [encode("r1", s, [v]) for s, v in enumerate([5, 100, -20])]
    push(scripts, keys, "r1", list(enumerate(e)))
    claim_many(scripts, keys, 3)
    statuses, left = commit_many(
        scripts, keys, [(e[0], 0, [5]), (e[1], 1, [100]), (e[2], 2, [-20])])
    assert (statuses, left) == ([1, -3, 1], 1)
    assert counters(client, keys) == (2, 2**63 - 25)
    assert client.lrange(keys.inflight(CONSUMER, 0), 0, -1) == [e[1]]
    assert client.getbit(keys.run("r1").done, 1) == 0


def test_dead_letter_resolves_a_batch_once(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    plan = make_run(client, keys, items=3, batch=3)
    element = encode("r1", 0, [1, 2, 3])
    push(scripts, keys, "r1", [(0, element)])
    claim(client, keys)
    rk = keys.run("r1")
    entry = json.dumps({"reason": "test", "element_b64": base64.b64encode(element).decode()})
    dl_keys = [keys.inflight(CONSUMER, 0), rk.done, rk.dead, rk.dead_items]
    dl_args = [element, 0, 3, entry]
    assert list(map(int, scripts.dead_letter(keys=dl_keys, args=dl_args))) == [1, 0]
    assert list(map(int, scripts.dead_letter(keys=dl_keys, args=dl_args))) == [0, 0]
    assert client.llen(rk.dead) == 1
    result = audit(client, keys, plan, expected_sum=6)
    assert (result.lost, result.duplicated, result.dead_lettered, result.dead_sum) == (0, 0, 3, 6)
    assert result.accounted and not result.exact


def test_audit_catches_a_double_count(client: redis.Redis, keys: Keys, scripts: Scripts) -> None:
    """The audit is evidence, not an echo: a counter bumped behind the scripts' back shows up."""
    plan = make_run(client, keys, items=6, batch=3)
    elements = [encode("r1", 0, [1, 1, 1]), encode("r1", 1, [2, 2, 2])]
    push(scripts, keys, "r1", list(enumerate(elements)))
    for seq, values in ((0, [1, 1, 1]), (1, [2, 2, 2])):
        element = claim(client, keys)
        assert commit(scripts, keys, element, seq, values)[0] == 1
    good = audit(client, keys, plan, expected_sum=9)
    assert good.exact and (good.lost, good.duplicated) == (0, 0)

    client.incrby(keys.run("r1").committed, 3)
    client.incrby(keys.run("r1").sum, 6)
    bad = audit(client, keys, plan, expected_sum=9)
    assert (bad.duplicated, bad.exact, bad.accounted) == (3, False, False)


def test_audit_catches_a_lost_batch(client: redis.Redis, keys: Keys, scripts: Scripts) -> None:
    plan = make_run(client, keys, items=5, batch=3)
    elements = [encode("r1", 0, [1, 1, 1]), encode("r1", 1, [2, 2])]
    push(scripts, keys, "r1", list(enumerate(elements)))
    element = claim(client, keys)
    assert commit(scripts, keys, element, 0, [1, 1, 1])[0] == 1
    client.delete(keys.queue)  # the second batch vanishes
    result = audit(client, keys, plan, expected_sum=7)
    # Marked pushed and not done: the bitmaps cannot tell a vanished batch from one still on
    # its way, so it is pending (the chaos checker, which looks in every list, tells them apart).
    assert (result.pending, result.lost, result.duplicated, result.exact) == (2, 0, 0, False)
    client.setbit(keys.run("r1").pushed, 1, 0)  # as if Redis lost the acknowledged push
    result = audit(client, keys, plan, expected_sum=7)
    assert (result.pending, result.lost, result.exact) == (0, 2, False)
    result = audit(client, keys, plan, expected_sum=7, complete=False)  # a producer died
    assert (result.pending, result.lost, result.not_pushed, result.exact) == (0, 0, 2, False)


@pytest.mark.parametrize("last_committed", [True, False])
def test_audit_counts_the_short_last_batch(
    client: redis.Redis, keys: Keys, scripts: Scripts, last_committed: bool
) -> None:
    plan = make_run(client, keys, items=4, batch=3)
    elements = [encode("r1", 0, [1, 1, 1]), encode("r1", 1, [5])]
    push(scripts, keys, "r1", list(enumerate(elements)))
    first = claim(client, keys)  # takes batch 0 (the right end)
    assert commit(scripts, keys, first, 0, [1, 1, 1])[0] == 1
    if last_committed:
        second = claim(client, keys)
        assert commit(scripts, keys, second, 1, [5])[0] == 1
    result = audit(client, keys, plan, expected_sum=8)
    assert result.pending == (0 if last_committed else 1)
    assert result.lost == 0
    assert result.exact is last_committed


def test_create_run_is_idempotent_for_its_producer_only(client: redis.Redis, keys: Keys) -> None:
    plan = RunPlan("r9", 10, 5)
    create_run(client, keys, plan, "host:1:aa")
    create_run(client, keys, plan, "host:1:aa")  # re-sent after a lost reply: fine
    with pytest.raises(ValueError, match="already exists"):
        create_run(client, keys, plan, "host:2:bb")
    assert client.hget(keys.run("r9").meta, "items") == b"10"
