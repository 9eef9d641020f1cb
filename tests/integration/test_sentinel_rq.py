"""The RQ transport (``--transport rq``) under Redis Sentinel with ``--min-replicas``: its pushes,
its jobs' commits and dead letters are acknowledged by replicas, and a kill -9 of the primary
mid-run loses nothing and counts nothing twice (docs/sentinel.md, "The RQ transport").

Real redis-server and redis-sentinel processes on loopback (tests/localsentinel.py), real RQ
worker processes, real kill -9.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import pytest
import redis

from exactsum.connection import RedisTarget, make_client
from exactsum.counters import Event
from exactsum.keys import Keys, RqKeys, job_id
from exactsum.protocol import encode
from exactsum.replication import AcknowledgedScript, NotAcknowledged, Replication
from exactsum.runs import RunPlan, create_run
from exactsum.transport.rq.job import JobContext
from exactsum.transport.rq.jobs import JobOptions
from exactsum.transport.rq.sink import RqSink
from tests.localredis import LocalRedis, replica_linked
from tests.localsentinel import LocalSentinelGroup
from tests.procs import Services, assert_exact, random_sum, wait_until

QUEUE = "q"
RQ = ("--transport", "rq", "--rq-queue", QUEUE)


@pytest.mark.timeout(90)
def test_rq_push_is_acknowledged_without_touching_the_meta_it_watches(
    primary_and_replica: tuple[LocalRedis, LocalRedis], key_prefix: str,
) -> None:
    """The push's barrier writes the run's ``acks`` hash, never the meta that the other producer
    threads WATCH (a write there made their transactions fail and be redone); and the
    replica has the job when the push returns."""
    primary, replica = primary_and_replica
    wait_until(lambda: replica_linked(replica), 30, "the replica to link up")
    client = primary.client()
    keys = Keys(key_prefix)
    rk = keys.run("ack")
    create_run(client, keys, RunPlan("ack", 4, 2), "p1", "rq")
    sink = RqSink(client, keys, "ack", 0, JobOptions(queue=QUEUE), 1, Replication(1, 5.0))
    meta_before = client.hgetall(rk.meta)
    assert sink.send([(0, 2, encode("ack", 0, [1, 2])), (1, 2, encode("ack", 1, [3, 4]))]) == 2
    assert client.hgetall(rk.meta) == meta_before
    assert client.hexists(rk.acks, "acknowledged_ms")
    # WAIT returned after the barrier, so the replica holds the whole transaction.
    on_replica = replica.client()
    assert on_replica.llen(RqKeys(QUEUE).queue) == 2
    assert on_replica.exists(RqKeys.job(job_id(key_prefix, "ack", 1)))
    assert on_replica.getbit(rk.pushed, 1) == 1


@pytest.mark.timeout(90)
def test_rq_jobs_scripts_are_acknowledged_and_refused_without_a_replica(
    primary_and_replica: tuple[LocalRedis, LocalRedis], key_prefix: str,
) -> None:
    """The context an RQ worker process builds from --min-replicas: its commit is WAITed for,
    and with no replica it is not acknowledged (the job's ``retrying`` sends it again), though
    carried out once; the re-send counts nothing."""
    primary, replica = primary_and_replica
    wait_until(lambda: replica_linked(replica), 30, "the replica to link up")
    client = primary.client()
    keys = Keys(key_prefix)
    rk = keys.run("job")
    create_run(client, keys, RunPlan("job", 4, 2), "p1", "rq")
    ctx = JobContext(client, keys, "c1", replication=Replication(1, 0.3))
    assert isinstance(ctx.scripts.commit_job, AcknowledgedScript)
    assert isinstance(ctx.scripts.dead_letter_job, AcknowledgedScript)
    commit_keys = [rk.meta, rk.done, rk.sum, rk.committed, rk.by_consumer, rk.stale, rk.batches,
                   rk.leases]
    client.hset(rk.batches, mapping={"0": encode("job", 0, [1, 2]),
                                     "1": encode("job", 1, [3, 4])})
    assert ctx.scripts.commit_job(keys=commit_keys, args=["c1", 0, 2, 3, "0"]) == 1
    assert replica.client().get(rk.sum) == b"3"

    replica.kill()
    with pytest.raises(NotAcknowledged, match="0 of 1 replicas"):
        ctx.scripts.commit_job(keys=commit_keys, args=["c1", 1, 2, 7, "0"])
    assert client.get(rk.sum) == b"10"  # carried out on the primary, once
    with pytest.raises(NotAcknowledged):
        ctx.scripts.commit_job(keys=commit_keys, args=["c1", 1, 2, 7, "0"])
    assert client.get(rk.sum) == b"10" and client.get(rk.committed) == b"4"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_rq_worker_processes_get_min_replicas_and_wait_for_the_replica(
    primary_and_replica: tuple[LocalRedis, LocalRedis], key_prefix: str, tmp_path: Path,
) -> None:
    """The consumer service passes --min-replicas to its RQ worker processes: with the replica
    down, a job's commit is carried out but not acknowledged, and the job sends it again until
    the replica is back; the batch is counted once, on both nodes."""
    primary, replica = primary_and_replica
    wait_until(lambda: replica_linked(replica), 30, "the replica to link up")
    client = primary.client()
    keys = Keys(key_prefix)
    rk = keys.run("wait")
    create_run(client, keys, RunPlan("wait", 2, 2), "p1", "rq")
    RqSink(client, keys, "wait", 0, JobOptions(queue=QUEUE), 1).send(
        [(0, 2, encode("wait", 0, [20, 22]))])
    replica.kill()
    services = Services(primary.url, key_prefix, tmp_path)
    try:
        consumer = services.consumer(*RQ, "--threads", "1", MIN_REPLICAS="1",
                                     REPLICA_TIMEOUT="0.3")
        wait_until(lambda: consumer.counter(Event.REDIS_RETRY) >= 2, 60,
                   "a job's commit refused twice for want of a replica")
        assert client.get(rk.sum) == b"42" and client.get(rk.committed) == b"2"
        replica.start()
        wait_until(lambda: replica.client().get(rk.sum) == b"42", 60, "the replica's copy")
        # The job ends once its commit is acknowledged (its re-send counted nothing).
        wait_until(lambda: client.llen(RqKeys(QUEUE).queue) == 0
                   and client.zcard(RqKeys(QUEUE).started) == 0, 60, "the job to finish")
    finally:
        services.close()
    assert client.get(rk.sum) == b"42" and client.get(rk.committed) == b"2"
    assert client.getbit(rk.done, 0) == 1 and client.hlen(rk.batches) == 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_rq_workers_that_wait_out_a_refusal_of_writes_are_replaced_at_once(
    own_redis: LocalRedis, key_prefix: str, tmp_path: Path,
) -> None:
    """A primary that refuses writes (NOREPLICAS: a new primary before its replica attached)
    ends RQ's work loop. The worker waits until writes are taken again and exits with status 75,
    and the pool starts the next one at once, instead of a backoff that had grown with every
    failed start during the outage; then a run is exact."""
    client = own_redis.client()
    services = Services(own_redis.url, key_prefix, tmp_path)
    try:
        consumer = services.consumer(*RQ, "--threads", "2")
        wait_until(lambda: consumer.counter(Event.RQ_WORKER_STARTED) >= 2, 60, "two RQ workers")
        time.sleep(1.0)  # in their blocking pop
        client.config_set("min-replicas-to-write", 1)  # no replica: every write is refused
        try:
            wait_until(lambda: consumer.counter(Event.RQ_WORKER_REDIS_ERROR) >= 2, 60,
                       "the workers to meet the refusal")
            time.sleep(3.0)
        finally:
            client.config_set("min-replicas-to-write", 0)
        wait_until(lambda: consumer.counter(Event.RQ_WORKER_REDIS_BACK) >= 2, 60,
                   "the workers to exit once writes are taken again")
        wait_until(lambda: consumer.counter(Event.RQ_WORKER_STARTED) >= 4, 30,
                   "their replacements")
        producer = services.producer(*RQ, "--count", "20000", "--seed", "3", "--batch", "1000")
        status = producer.wait(timeout=120)
        report = producer.report()
        assert status == 0, (report, producer.stderr[-3000:])
    finally:
        services.close()
    assert_exact(report, 20000, random_sum(20000, 3))
    counts = consumer.counters()  # the pool's and its worker processes', at their exit
    # Each of the two workers met the refusal once, waited it out and exited 75 (no other
    # exit), and each was replaced at once, without a backoff; the stop at the end is no death.
    assert counts[Event.RQ_WORKER_REDIS_ERROR] == 2, counts
    assert counts[Event.RQ_WORKER_REDIS_BACK] == counts[Event.RQ_WORKER_DIED] == 2, counts
    assert counts[Event.RQ_WORKER_RESTARTED_AT_ONCE] == 2, counts
    assert counts[Event.RQ_WORKER_RESTART_DELAYED] == 0, counts
    assert counts[Event.RQ_WORKER_STARTED] == 4, counts


# -- a failover during an RQ run ----------------------------------------------------------------

ITEMS = 200_000
BATCH = 1000
SEED = 21
# Paced to about 50 s of pushing, so that the kill lands mid-run on a loaded machine too.
RATE = 4000
KILL_AT = 40_000


def _on(node: LocalRedis | None, key: str) -> int | None:
    if node is None:
        return None
    try:
        return int(cast(bytes | None, node.client().get(key)) or 0)
    except redis.RedisError:
        return None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_of_the_primary_mid_rq_run_loses_nothing_and_counts_nothing_twice(
    sentinel_group: LocalSentinelGroup, key_prefix: str, tmp_path: Path,
) -> None:
    group = sentinel_group
    services = Services(group.url, key_prefix, tmp_path)
    keys = Keys(key_prefix)
    run_id = "rqfailover"
    rk = keys.run(run_id)
    expected_sum = random_sum(ITEMS, SEED)  # our oracle, not the producer's report
    env = {"REDIS_SENTINELS": group.addresses_text, "REDIS_SENTINEL_MASTER": group.master,
           "MIN_REPLICAS": "1", "REPLICA_TIMEOUT": "1"}
    observer = make_client(RedisTarget(group.url, group.addresses, group.master),
                           socket_timeout=2.0, name="test-observer")

    def committed() -> int:
        try:
            return int(cast(bytes | None, observer.get(rk.committed)) or 0)
        except redis.RedisError:
            return 0

    try:
        for _ in range(2):
            services.consumer(*RQ, "--threads", "3", "--heartbeat-ttl", "6",
                              "--reclaim-interval", "0.5", **env)
        producer = services.producer(*RQ, "--count", str(ITEMS), "--seed", str(SEED),
                                     "--batch", str(BATCH), "--run-id", run_id,
                                     "--rate", str(RATE), "--timeout", "240", **env)
        wait_until(lambda: committed() >= KILL_AT, 120, f"{KILL_AT} items committed")
        victim = group.primary()
        before_kill = committed()
        # What the replicas acknowledged before the kill (a write of ours, then WAIT, covers
        # every commit before it): the failover must not take any of it away.
        Replication(1, 5.0).barrier(observer, rk.acks, "test_checked_ms")
        victim.kill()
        killed = time.monotonic()
        new_port = group.wait_promoted(victim.port, timeout=60)
        promoted_s = time.monotonic() - killed
        new_primary = group.node(new_port)
        wait_until(lambda: _on(new_primary, rk.committed) is not None, 30,
                   "the new primary to answer")
        at_promotion = cast(int, _on(new_primary, rk.committed))
        assert at_promotion >= before_kill, (at_promotion, before_kill)
        # On a loaded host two Sentinels may fail over in two epochs at once and the later one
        # wins a second after the first promotion: follow the primary they name now.
        wait_until(lambda: (_on(group.current_primary(), rk.committed) or 0) > at_promotion,
                   120, "a commit on the new primary")
        first_commit_s = time.monotonic() - killed
        group.restart(victim)
        group.wait_replica(victim, timeout=120)
        rejoined_s = time.monotonic() - killed
        status = producer.wait(timeout=240)
        report = producer.report()
        assert status == 0, (report, producer.stderr[-3000:])
    finally:
        services.close()
        observer.close()

    # The kill landed mid-run: some items were committed before it, not all.
    assert 0 < before_kill < ITEMS, before_kill
    assert_exact(report, ITEMS, expected_sum)
    client = group.primary().client()
    batches = ITEMS // BATCH
    assert int(cast(bytes, client.get(rk.sum))) == expected_sum
    assert int(cast(bytes, client.get(rk.committed))) == ITEMS
    assert client.bitcount(rk.done) == batches
    assert client.bitcount(rk.pushed) == batches
    assert client.hlen(rk.batches) == 0  # every batch resolved: none waits for a job
    assert int(client.get(rk.dead_items) or 0) == 0
    # Every node, the old primary included, ends with the same count and sum.
    for node in group.nodes:
        wait_until(lambda n=node: _on(n, rk.committed) == ITEMS, 60,  # type: ignore[misc]
                   f"node {node.port} to catch up")
        assert int(cast(bytes, node.client().get(rk.sum))) == expected_sum
    retried = sum(p.counter(Event.REDIS_RETRY) for p in services.procs)
    print(f"\nRQ, --min-replicas 1: primary kill -9'd at {before_kill} of {ITEMS} items "
          f"committed; promoted {promoted_s:.2f} s after, first commit on the new primary "
          f"{first_commit_s:.2f} s, old primary back as a replica {rejoined_s:.2f} s; "
          f"{report['stale_commits']} stale commits refused; {retried} retries logged")
