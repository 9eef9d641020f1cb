"""Redis Cluster, script by script: every script in one slot with the keys its callers give it,
a call across two slots refused before it reaches Redis, and a partition's copy of the run's
epoch never lowered. Whole runs over a cluster are in test_cluster.py."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot

from exactsum.audit import audit, dead_letter_entry
from exactsum.cluster import AckedScript, choose_tags, register_scripts
from exactsum.keys import Keys
from exactsum.protocol import encode
from exactsum.runs import RunPlan, create_run, pushed_bitmap, write_partition_metas
from tests.cluster_harness import primary_of_tag


def one_slot(keys: list[str]) -> int:
    """The one slot ``keys`` map to; fails if they map to several."""
    slots = {key_slot(key.encode()) for key in keys}
    assert len(slots) == 1, f"keys in {len(slots)} slots: {keys}"
    return slots.pop()


@pytest.mark.timeout(120)
def test_every_script_runs_on_a_cluster_with_its_keys_in_one_slot(
    cclient: redis.Redis, keys: Keys
) -> None:
    """Each script with the keys its callers give it, on two partitions on two primaries: no
    CROSSSLOT, and the audit adds the partitions up to the exact figures."""
    scripts = register_scripts(cclient, min_replicas=1, replica_timeout=2.0)
    tags = choose_tags(cclient, 2)
    assert primary_of_tag(cclient, tags[0]) != primary_of_tag(cclient, tags[1])
    run_id, consumer = "r1", "c1"
    values = [5, -7, 11, 2**40]
    plan = RunPlan(run_id, len(values), 1)
    create_run(cclient, keys, plan, "producer-1", tags=tags)
    for index, tag in enumerate(tags):
        part = keys.partition(tag)
        rk, inflight = part.run(run_id), part.inflight(consumer, 0)
        seqs = [seq for seq in range(len(values)) if seq % len(tags) == index]
        elements = {seq: encode(run_id, seq, [values[seq]]) for seq in seqs}
        calls = {
            "push": [part.queue, rk.pushed, rk.meta],
            "claim": [part.queue, inflight],
            "commit": [inflight, rk.meta, rk.done, rk.sum, rk.committed, rk.by_consumer,
                       rk.stale],
            "retry": [inflight, part.queue, rk.attempts, rk.done],
            "dead_letter": [inflight, rk.done, rk.dead, rk.dead_items],
            "dead_letter_foreign": [inflight, part.dead],
            "reclaim": [part.heartbeat(consumer), inflight, part.queue, part.reclaimed],
            "requeue_dead": [rk.dead, part.queue, rk.done, rk.dead_items, rk.attempts],
            "drop_dead": [part.dead, part.dropped],
        }
        for script_keys in calls.values():
            one_slot(script_keys)
        first, second = seqs
        # The partition's copy of the meta carries the run's epoch, which push.lua checks.
        assert cclient.hget(rk.meta, "epoch") == b"1"
        args: list[bytes | int] = [0, 1]
        for seq in seqs:
            args += [seq, elements[seq]]
        assert scripts.push(keys=calls["push"], args=args) == 2
        assert scripts.push(keys=calls["push"], args=args) == 2  # re-sent: pushed once
        assert len(scripts.claim(keys=calls["claim"], args=[10])) == 2
        reply = scripts.commit(keys=calls["commit"], args=[consumer, elements[first], first, 1,
                                                           values[first]])
        assert reply == [1, 1]
        assert scripts.retry(keys=calls["retry"], args=[elements[second], second, 3])[0] == 1
        assert scripts.claim(keys=calls["claim"], args=[10]) == [elements[second]]
        entry = dead_letter_entry(elements[second], "test", consumer, run=run_id, seq=second,
                                  items=1)
        assert scripts.dead_letter(keys=calls["dead_letter"],
                                   args=[elements[second], second, 1, entry])[0] == 1
        assert scripts.requeue_dead(keys=calls["requeue_dead"],
                                    args=[entry, elements[second], second, 1]) == 1
        assert scripts.claim(keys=calls["claim"], args=[10]) == [elements[second]]
        assert scripts.commit(keys=calls["commit"], args=[consumer, elements[second], second, 1,
                                                          values[second]]) == [1, 0]
        cclient.lpush(part.queue, b"not ours")
        assert scripts.claim(keys=calls["claim"], args=[10]) == [b"not ours"]
        foreign = dead_letter_entry(b"not ours", "foreign", consumer)
        assert scripts.dead_letter_foreign(keys=calls["dead_letter_foreign"],
                                           args=[b"not ours", foreign])[0] == 1
        assert scripts.drop_dead(keys=calls["drop_dead"], args=[foreign]) == 1
        assert scripts.reclaim(keys=calls["reclaim"], args=["0"]) == 0
    result = audit(cclient, keys, plan, sum(values))
    assert result.exact, result
    # Each partition's pushed bitmap holds its own batches; OR-ed, every batch of the run.
    assert pushed_bitmap(cclient, keys, run_id) == bytes([0b11110000])
    assert result.sum == sum(values) and result.by_consumer == {consumer: len(values)}


def test_a_script_whose_keys_span_two_slots_is_refused(cclient: redis.Redis, keys: Keys) -> None:
    """The check behind the test above can fail: a call across partitions never reaches Redis,
    and Redis itself refuses such a script."""
    scripts = register_scripts(cclient)
    tags = choose_tags(cclient, 2)
    a, b = keys.partition(tags[0]), keys.partition(tags[1])
    assert isinstance(scripts.claim, AckedScript)
    with pytest.raises(ValueError, match="one slot"):
        scripts.claim(keys=[a.queue, b.inflight("c", 0)], args=[1])
    with pytest.raises(redis.exceptions.RedisClusterException):
        cclient.eval("return 1", 2, a.queue, b.queue)


def test_a_partition_copy_of_the_epoch_is_never_lowered(cclient: redis.Redis,
                                                          keys: Keys) -> None:
    """The epoch race: a producer that stalled inside its own resume writes its older epoch
    into the partitions' copies of the meta after a later producer has written its own. The
    write is refused, the later producer keeps pushing, and the stale one is fenced."""
    scripts = register_scripts(cclient, min_replicas=1, replica_timeout=2.0)
    tags = choose_tags(cclient, 3)
    run_id = "raced"
    create_run(cclient, keys, RunPlan(run_id, 30, 10), "producer-1", tags=tags)
    metas = [keys.partition(tag).run(run_id).meta for tag in tags]
    assert [cclient.hget(meta, "epoch") for meta in metas] == [b"1"] * 3
    # The later attempt (epoch 3) copies its epoch first; the stalled one (2) wakes after it.
    assert write_partition_metas(cclient, keys, run_id, tags, epoch=3, run=run_id,
                                 partitions=3) == dict.fromkeys(tags, 3)
    assert write_partition_metas(cclient, keys, run_id, tags, epoch=2, run=run_id,
                                 partitions=3) == dict.fromkeys(tags, 3)
    assert [cclient.hget(meta, "epoch") for meta in metas] == [b"3"] * 3
    # Equal is written (a re-sent call), and higher raises it.
    assert write_partition_metas(cclient, keys, run_id, tags[:1], epoch=3) == {tags[0]: 3}
    part = keys.partition(tags[1])
    rk = part.run(run_id)
    push_keys = [part.queue, rk.pushed, rk.meta]
    element = encode(run_id, 1, [5])
    assert scripts.push(keys=push_keys, args=[0, 2, 1, element]) == -1  # the stale one: fenced
    assert scripts.push(keys=push_keys, args=[0, 3, 1, element]) == 1
    assert cclient.lrange(part.queue, 0, -1) == [element]


