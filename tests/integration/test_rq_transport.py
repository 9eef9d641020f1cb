"""The RQ transport (``--transport rq``) against a real redis-server, real RQ workers, real signals.

Each test has a Redis of its own: RQ's keys live in RQ's ``rq:`` namespace, not under the test's
key prefix, so a shared server would let tests see each other's queues and workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from exactsum.counters import Event
from exactsum.keys import Keys, RqKeys, job_id, parse_job_id
from exactsum.runs import ProducerFenced, RunPlan, create_run
from exactsum.scripts import Scripts
from exactsum.transport.rq.jobs import JobOptions
from exactsum.transport.rq.sink import RqSink
from tests.localredis import LocalRedis
from tests.procs import (
    Proc,
    Services,
    assert_exact,
    finish,
    numbers_file,
    random_sum,
    wait_until,
)
from tests.procs import committed as committed_items

QUEUE = "q"
# Every run's numbers come from this seed, so that each test knows its sum (procs.random_sum).
SEED = "5"
RQ = ("--transport", "rq", "--rq-queue", QUEUE)
# Dead workers noticed within about two seconds (the heartbeat TTL) and looked for twice a second.
QUICK = ("--heartbeat-ttl", "2", "--block-timeout", "0.5", "--reclaim-interval", "0.5")


@pytest.fixture
def rclient(own_redis: LocalRedis) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(own_redis.url, socket_timeout=10)
    yield conn
    conn.close()


def _run_keys(keys: Keys, report: dict[str, Any]) -> Any:
    return keys.run(report["run_id"])


def _busy_execution(client: redis.Redis, consumer_id: str | None = None) -> tuple[str, str]:
    """An execution in progress (its registry member and worker), of ``consumer_id``'s workers
    if given; waits for one."""
    found: list[tuple[str, str]] = []

    def look() -> bool:
        for member in cast(list[bytes], client.zrange(RqKeys(QUEUE).started, 0, -1)):
            worker = client.hget(RqKeys.execution(member.decode()), "worker_name")
            if worker and (consumer_id is None or worker.decode().startswith(consumer_id)):
                found.append((member.decode(), worker.decode()))
                return True
        return False

    wait_until(look, 30, "an RQ job in progress")
    return found[0]


def _worker_pid(client: redis.Redis, worker: str) -> int:
    return int(cast(bytes, client.hget(RqKeys.worker(worker), "pid")))


def _consumer(services: Services, *args: str) -> tuple[Proc, str]:
    proc = services.consumer(*RQ, *QUICK, *args)
    return proc, services.consumer_id(proc)


@pytest.mark.timeout(120)
def test_rq_run_of_30000_items_is_exact_over_two_consumers(own_services: Services) -> None:
    _consumer(own_services, "--threads", "3")
    _consumer(own_services, "--threads", "3")
    producer = own_services.producer(*RQ, "--count", "30000", "--seed", SEED, "--batch", "100")
    report = finish(producer, timeout=100)
    assert_exact(report, 30000, random_sum(30000, int(SEED)))
    assert len(report["by_consumer"]) == 2, report
    assert report["stale_commits"] == 0, report


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_of_an_rq_worker_in_a_job_puts_the_job_back_and_counts_it_once(
    own_services: Services, rclient: redis.Redis
) -> None:
    # 20 jobs of about a second each over two workers: the one killed is surely mid-job.
    consumer, _ = _consumer(own_services, "--threads", "2", "--work-io-ms", "10")
    producer = own_services.producer(*RQ, "--count", "2000", "--seed", SEED, "--batch", "100")
    member, worker = _busy_execution(rclient)
    os.kill(_worker_pid(rclient, worker), signal.SIGKILL)
    report = finish(producer, timeout=100)
    assert_exact(report, 2000, random_sum(2000, int(SEED)))
    keys = own_services.keys
    assert int(rclient.get(keys.reclaimed) or 0) >= 1
    killed_job = member.rsplit(":", 1)[0]
    # Put back by the consumer's reclaimer (the lease below says it was that job).
    assert consumer.counter(Event.RQ_JOBS_PUT_BACK) >= 1, consumer.counters()
    # The job ran again to completion, on a new worker, and its batch was counted once.
    run_id, seq = cast(tuple[str, int], parse_job_id(keys.prefix, killed_job))
    assert rclient.getbit(keys.run(run_id).done, seq) == 1
    assert rclient.hget(keys.run(run_id).leases, str(seq)) == b"1"
    assert consumer.counter(Event.RQ_WORKER_DIED) >= 1  # its death was seen (and logged)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_of_a_whole_rq_consumer_is_recovered_by_another(
    own_services: Services, rclient: redis.Redis
) -> None:
    victim, victim_id = _consumer(own_services, "--threads", "2", "--work-io-ms", "10")
    producer = own_services.producer(*RQ, "--count", "2000", "--seed", SEED, "--batch", "100")
    _busy_execution(rclient, victim_id)
    victim.signal(signal.SIGKILL)  # its workers die with it (they ask the kernel to)
    survivor, _ = _consumer(own_services, "--threads", "2")
    report = finish(producer, timeout=100)
    assert_exact(report, 2000, random_sum(2000, int(SEED)))
    assert int(rclient.get(own_services.keys.reclaimed) or 0) >= 1
    assert survivor.counter(Event.RQ_JOBS_PUT_BACK) >= 1, survivor.counters()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_stops_an_rq_consumer_in_order_and_its_unfinished_jobs_go_back(
    own_services: Services, rclient: redis.Redis
) -> None:
    # Jobs of 3 s against a grace of 2 s: the workers are asked to stop, cannot finish, and are
    # killed at the end of the grace; their jobs are put back for the other consumer.
    leaver, leaver_id = _consumer(own_services, "--threads", "2", "--work-io-ms", "30",
                                  "--grace", "2")
    producer = own_services.producer(*RQ, "--count", "1000", "--seed", SEED, "--batch", "100")
    _busy_execution(rclient, leaver_id)
    stayer, _ = _consumer(own_services, "--threads", "2")
    leaver.signal(signal.SIGTERM)
    assert leaver.wait(timeout=10) == 0, leaver.stderr[-3000:]
    assert leaver.counter(Event.GRACE_OVERRUN) >= 1, leaver.counters()
    assert leaver.counter(Event.RQ_JOBS_PUT_BACK) >= 1, leaver.counters()
    assert not rclient.exists(own_services.keys.heartbeat(leaver_id))  # withdrawn on the way out
    report = finish(producer, timeout=100)
    assert_exact(report, 1000, random_sum(1000, int(SEED)))
    assert stayer.popen.poll() is None


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_paused_rq_consumer_comes_back_fenced_and_nothing_counts_twice(
    own_services: Services, rclient: redis.Redis
) -> None:
    late, late_id = _consumer(own_services, "--threads", "1", "--work-io-ms", "10")
    producer = own_services.producer(*RQ, "--count", "1000", "--seed", SEED, "--batch", "100")
    _, worker = _busy_execution(rclient, late_id)
    pids = [late.popen.pid, _worker_pid(rclient, worker)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        _consumer(own_services, "--threads", "2")
        # The paused consumer's heartbeat lapses; the other one puts its job back and counts it.
        wait_until(lambda: int(rclient.get(own_services.keys.reclaimed) or 0) >= 1, 30,
                   "the paused worker's job to be put back")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    report = finish(producer, timeout=100)
    assert_exact(report, 1000, random_sum(1000, int(SEED)))
    # The late execution woke up and tried to commit: refused, its batch already counted by the
    # job's new execution (or, had it come back first, its lease was no longer the batch's).
    # Counted in the RQ worker's own file, which late.counters() adds up.
    wait_until(lambda: late.counter(Event.COMMIT_ALREADY_COUNTED)
               + late.counter(Event.COMMIT_FENCED) > 0, 30, "the late execution's refused commit")
    assert int(rclient.get(_run_keys(own_services.keys, report).stale) or 0) >= 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_batches_whose_rq_jobs_were_deleted_get_new_jobs_and_count_once(
    own_services: Services, rclient: redis.Redis
) -> None:
    producer = own_services.producer(*RQ, "--count", "3000", "--seed", SEED, "--batch", "100")
    rq = RqKeys(QUEUE)
    wait_until(lambda: rclient.llen(rq.queue) == 30, 30, "every job enqueued")
    # What `rq empty` does, or RQ expiring the records of jobs that were still to run: the
    # queue and the job records are gone; the batches' numbers are not.
    job_ids = [j.decode() for j in rclient.lrange(rq.queue, 0, -1)]
    rclient.delete(rq.queue, *(RqKeys.job(j) for j in job_ids[:20]))
    rclient.rpush(rq.queue, *job_ids[20:])  # ten keep their job
    consumer, _ = _consumer(own_services, "--threads", "2")
    report = finish(producer, timeout=100)
    assert_exact(report, 3000, random_sum(3000, int(SEED)))
    wait_until(lambda: consumer.counter(Event.RQ_ORPHANS_REQUEUED) >= 20, 10,
               "the requeue in the consumer's counters file")
    assert consumer.counter(Event.RQ_ORPHANS_REQUEUED) == 20, consumer.counters()


@pytest.mark.timeout(120)
def test_status_shows_an_rq_run_its_rq_queue_and_what_each_rq_consumer_committed(
    own_services: Services, rclient: redis.Redis
) -> None:
    producer = own_services.producer(*RQ, "--count", "3000", "--seed", SEED, "--batch", "100")
    wait_until(lambda: rclient.llen(RqKeys(QUEUE).queue) == 30, 30, "every job enqueued")

    def status() -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "observe.status", "--json"],
                              capture_output=True, text=True, timeout=30,
                              env=own_services.env(), check=True)
        return cast(dict[str, Any], json.loads(done.stdout))

    waiting = status()
    assert waiting["rq_queues"] == {QUEUE: 30}, waiting
    assert [run["transport"] for run in waiting["runs"]] == ["rq"]
    _, consumer_id = _consumer(own_services, "--threads", "2")
    assert_exact(finish(producer, timeout=100), 3000, random_sum(3000, int(SEED)))

    def counted() -> bool:
        snap = status()
        mine = [c for c in snap["consumers"] if c["consumer_id"] == consumer_id]
        return bool(mine) and mine[0]["committed"] == 3000 and snap["rq_queues"] == {QUEUE: 0}

    wait_until(counted, 20, "the consumer's heartbeat to count its jobs' items")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_jobs_that_raise_are_retried_by_rq_until_they_count(
    own_services: Services, rclient: redis.Redis
) -> None:
    _consumer(own_services, "--threads", "3", "--flaky-rate", "0.3")
    producer = own_services.producer(*RQ, "--count", "20000", "--seed", SEED, "--batch", "100",
                                     "--rq-retries", "20")
    report = finish(producer, timeout=100)
    assert_exact(report, 20000, random_sum(20000, int(SEED)))
    attempts = {int(v) for v in rclient.hvals(_run_keys(own_services.keys, report).attempts)}
    assert attempts and max(attempts) >= 1, "no job ever failed: the test proved nothing"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_poison_jobs_use_up_their_rq_retries_and_are_dead_lettered_never_lost(
    own_services: Services, rclient: redis.Redis
) -> None:
    _consumer(own_services, "--threads", "3", "--fail-rate", "0.002")
    producer = own_services.producer(*RQ, "--count", "20000", "--seed", SEED, "--batch", "10",
                                     "--rq-retries", "2")
    assert producer.wait(timeout=100) == 3, producer.stderr[-3000:]
    report = producer.report()
    assert report["lost"] == 0 and report["duplicated"] == 0, report
    assert report["dead_lettered"] > 0, report
    assert report["committed"] + report["dead_lettered"] == 20000, report
    assert report["sum"] + report["dead_sum"] == random_sum(20000, int(SEED)), report
    entries = [json.loads(e) for e in
               rclient.lrange(_run_keys(own_services.keys, report).dead, 0, -1)]
    assert entries and all("poison" in e["reason"] for e in entries), entries[:3]
    assert all(e["attempts"] == 3 for e in entries), entries[:3]  # RQ ran each 1 + 2 times
    assert sum(e["items"] for e in entries) == report["dead_lettered"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dead_letters_of_an_rq_run_requeued_by_the_operator_count_once(
    own_services: Services, own_redis: LocalRedis, rclient: redis.Redis
) -> None:
    poisoned, _ = _consumer(own_services, "--threads", "2", "--fail-rate", "0.01")
    producer = own_services.producer(*RQ, "--count", "2000", "--seed", SEED, "--batch", "10",
                                     "--rq-retries", "0")
    assert producer.wait(timeout=60) == 3, producer.stderr[-3000:]
    report = producer.report()
    assert report["dead_lettered"] > 0 and report["lost"] == 0, report
    poisoned.signal(signal.SIGTERM)
    assert poisoned.wait(timeout=20) == 0
    _consumer(own_services, "--threads", "2")  # the fix is deployed: nothing is poison now

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "exactsum_admin", *args], capture_output=True, text=True,
            timeout=30, env=own_services.env(), check=False)

    requeued = admin("dead", "requeue", "--run", report["run_id"], "--all")
    assert requeued.returncode == 0, requeued.stderr
    assert admin("dead", "requeue", "--run", report["run_id"],
                 "--all").stdout.startswith("requeue: 0 of 0")
    wait_until(lambda: admin("audit", "--run", report["run_id"]).returncode == 0, 60,
               "the requeued batches to be counted")
    audited = json.loads(admin("audit", "--run", report["run_id"], "--json").stdout)
    assert audited["committed"] == 2000 and audited["dead_lettered"] == 0, audited
    assert audited["duplicated"] == 0 and audited["sum"] == random_sum(2000, int(SEED)), audited
    assert rclient.hlen(own_services.keys.run(report["run_id"]).batches) == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_jobs_rq_kills_for_their_timeout_are_dead_lettered_with_rqs_reason(
    own_services: Services, rclient: redis.Redis
) -> None:
    # Every job needs 1.5 s and may take 1 s: RQ kills it, retries it once, then fails it.
    _consumer(own_services, "--threads", "2", "--work-io-ms", "30")
    producer = own_services.producer(*RQ, "--count", "200", "--seed", SEED, "--batch", "50",
                                     "--rq-job-timeout", "1", "--rq-retries", "1")
    assert producer.wait(timeout=100) == 3, producer.stderr[-3000:]
    report = producer.report()
    assert report["lost"] == 0 and report["duplicated"] == 0, report
    assert report["committed"] == 0 and report["dead_lettered"] == 200, report
    assert report["dead_sum"] == random_sum(200, int(SEED)), report
    entries = [json.loads(e) for e in
               rclient.lrange(_run_keys(own_services.keys, report).dead, 0, -1)]
    assert len(entries) == 4
    assert all("JobTimeoutException" in e["reason"] for e in entries), entries


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_redis_killed_and_restarted_mid_rq_run(
    own_redis: LocalRedis, own_services: Services
) -> None:
    _consumer(own_services, "--threads", "2")
    _consumer(own_services, "--threads", "2")
    producer = own_services.producer(*RQ, "--count", "100000", "--seed", SEED, "--batch", "100",
                                     "--max-queue", "20000")
    client = redis.Redis.from_url(own_redis.url, socket_timeout=5)
    wait_until(lambda: int(client.zcard(own_services.keys.runs) or 0) > 0
               and committed_items(client, own_services.keys) > 5000, 60, "a run under way")
    # The kill lands mid-run: the producer still waits and items are still uncommitted.
    before_kill = committed_items(client, own_services.keys)
    client.close()
    own_redis.kill()
    assert producer.popen.poll() is None, producer.stderr[-3000:]
    assert before_kill < 100000, before_kill
    time.sleep(1.5)
    own_redis.start()
    report = finish(producer, timeout=150)
    assert_exact(report, 100000, random_sum(100000, int(SEED)))


@pytest.mark.timeout(240)
def test_rq_producer_sigkilled_mid_push_is_resumed_exactly(
        own_services: Services, rclient: redis.Redis, tmp_path: Any) -> None:
    """The same as the native transport's resume: the pushed bitmap says what was enqueued, the
    resumed producer enqueues the rest, and no job is enqueued twice."""
    path, total = numbers_file(tmp_path, 100_000)
    keys = own_services.keys
    for _ in range(2):
        _consumer(own_services, "--threads", "2")
    args = (*RQ, "--input", str(path), "--batch", "1000", "--max-queue", "5000", "--run-id",
            "rqresume")
    first = own_services.producer(*args, name="first")
    wait_until(lambda: rclient.bitcount(keys.run("rqresume").pushed) >= 20, 90, "20 jobs")
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    at_kill = int(rclient.bitcount(keys.run("rqresume").pushed))
    assert at_kill < 100
    report = finish(own_services.producer(*args, name="resumed"), timeout=200)
    assert_exact(report, 100_000, total)
    assert report["resumed"] and report["epoch"] == 2
    assert report["pushed_before"] >= at_kill * 1000
    rk = keys.run("rqresume")
    assert rclient.bitcount(rk.done) == 100 and int(rclient.get(rk.stale) or 0) == 0


@pytest.mark.timeout(30)
def test_rq_push_of_a_fenced_producer_enqueues_nothing(rclient: redis.Redis) -> None:
    keys = Keys("t")
    _plan(rclient, keys, "r1", 30, 10)
    old = RqSink(rclient, keys, "r1", bound=0, options=JobOptions(queue=QUEUE), epoch=1)
    batches = [(seq, 10, b"pc1|r1|%d|10|0|1,1,1,1,1,1,1,1,1,1" % seq) for seq in range(3)]
    assert old.send(batches[:1]) == 1
    rclient.hincrby(keys.run("r1").meta, "epoch", 1)  # another producer resumed the run
    with pytest.raises(ProducerFenced, match="taken over by another producer"):
        old.send(batches)
    assert rclient.lrange(RqKeys(QUEUE).queue, 0, -1) == [b"t-r1-0"]
    assert rclient.bitcount(keys.run("r1").pushed) == 1
    assert rclient.hlen(keys.run("r1").batches) == 1
    new = RqSink(rclient, keys, "r1", bound=0, options=JobOptions(queue=QUEUE), epoch=2)
    assert new.send(batches) == 3
    assert rclient.lrange(RqKeys(QUEUE).queue, 0, -1) == [b"t-r1-0", b"t-r1-1", b"t-r1-2"]


# -- the scripts and the enqueue on their own ------------------------------------------------


def _plan(client: redis.Redis, keys: Keys, run_id: str, items: int, batch: int) -> RunPlan:
    plan = RunPlan(run_id, items, batch)
    create_run(client, keys, plan, "test-producer", "rq")
    return plan


@pytest.mark.timeout(30)
def test_enqueue_is_once_only_and_stops_at_the_bound(rclient: redis.Redis) -> None:
    keys = Keys("t")
    _plan(rclient, keys, "r1", 30, 10)
    sink = RqSink(rclient, keys, "r1", bound=2, options=JobOptions(queue=QUEUE), epoch=1)
    batches = [(seq, 10, b"pc1|r1|%d|10|0|1,1,1,1,1,1,1,1,1,1" % seq) for seq in range(3)]
    assert sink.send(batches) == 2  # the third does not fit under the bound
    assert sink.send(batches) == 2  # re-sent: nothing new, still no room
    rq_queue = RqKeys(QUEUE).queue
    assert rclient.lrange(rq_queue, 0, -1) == [b"t-r1-0", b"t-r1-1"]
    rclient.lpop(rq_queue)  # a worker took one: room for the third
    assert sink.send(batches) == 3
    assert rclient.lrange(rq_queue, 0, -1) == [b"t-r1-1", b"t-r1-2"]
    assert rclient.hlen(keys.run("r1").batches) == 3
    assert rclient.bitcount(keys.run("r1").pushed) == 3
    assert parse_job_id("t", job_id("t", "r-1_x", 12)) == ("r-1_x", 12)
    assert parse_job_id("t", "other-r-1") is None and parse_job_id("t", "t-r-x") is None


@pytest.mark.timeout(30)
def test_commit_job_counts_once_and_refuses_an_old_lease(rclient: redis.Redis) -> None:
    keys, scripts = Keys("t"), Scripts.register(rclient)
    _plan(rclient, keys, "r1", 10, 10)
    rk = keys.run("r1")
    rclient.hset(rk.batches, "0", b"element")
    commit_keys = [rk.meta, rk.done, rk.sum, rk.committed, rk.by_consumer, rk.stale, rk.batches,
                   rk.leases]
    rclient.hset(rk.leases, "0", 1)  # put back once: lease 1
    assert scripts.commit_job(keys=commit_keys, args=["c", 0, 10, 55, "0"]) == -1
    assert rclient.get(rk.sum) is None and rclient.hexists(rk.batches, "0")
    assert scripts.commit_job(keys=commit_keys, args=["c", 0, 10, 55, "1"]) == 1
    assert scripts.commit_job(keys=commit_keys, args=["c", 0, 10, 55, "1"]) == 0
    assert rclient.get(rk.sum) == b"55" and rclient.get(rk.committed) == b"10"
    assert not rclient.hexists(rk.batches, "0")
    assert rclient.get(rk.stale) == b"2"
    # A sum that would overflow is refused whole.
    rclient.hset(rk.batches, "1", b"element")
    assert scripts.commit_job(keys=commit_keys, args=["c", 1, 1, 2**63 - 1, "0"]) == -3
    assert rclient.get(rk.sum) == b"55" and rclient.getbit(rk.done, 1) == 0


@pytest.mark.timeout(30)
def test_reclaim_job_puts_back_while_retries_last_then_dead_letters(
    rclient: redis.Redis,
) -> None:
    keys, scripts, rq = Keys("t"), Scripts.register(rclient), RqKeys(QUEUE)
    _plan(rclient, keys, "r1", 10, 10)
    rk = keys.run("r1")
    job = job_id("t", "r1", 0)
    rclient.hset(rk.batches, "0", b"element")
    rclient.hset(RqKeys.job(job), mapping={"status": "started", "retries_left": 1})

    def reclaim(member: str) -> list[int]:
        rclient.zadd(rq.started, {member: 1})
        return [int(x) for x in scripts.reclaim_job(
            keys=[rq.started, rq.queue, RqKeys.job(job), rk.done, rk.leases, rk.batches,
                  rk.dead, rk.dead_items, keys.reclaimed],
            args=[member, job, 0, 10, '{"reason": "dead"}'],
        )]

    assert reclaim(f"{job}:e1") == [1, 1]  # put back, lease 1, one retry used
    assert rclient.lrange(rq.queue, 0, -1) == [job.encode()]
    assert rclient.hget(RqKeys.job(job), "retries_left") == b"0"
    assert reclaim(f"{job}:e2") == [2, 2]  # no retries left: dead-lettered
    assert rclient.getbit(rk.done, 0) == 1 and rclient.get(rk.dead_items) == b"10"
    assert not rclient.hexists(rk.batches, "0")
    assert reclaim(f"{job}:e3") == [0, 0]  # resolved: nothing to put back...
    assert rclient.zscore(rq.started, f"{job}:e3") is None  # ...but the dead entry goes
    assert rclient.llen(rq.queue) == 1 and rclient.llen(rk.dead) == 1
    # A batch that is not one of ours (no such run, no such element): nothing is touched.
    other = keys.run("r2")
    rclient.zadd(rq.started, {"t-r2-0:e9": 1})
    assert [int(x) for x in scripts.reclaim_job(
        keys=[rq.started, rq.queue, RqKeys.job("t-r2-0"), other.done, other.leases,
              other.batches, other.dead, other.dead_items, keys.reclaimed],
        args=["t-r2-0:e9", "t-r2-0", 0, 10, "{}"])] == [0, 0]
    assert rclient.zscore(rq.started, "t-r2-0:e9") is not None


@pytest.mark.timeout(30)
def test_rescue_job_moves_a_stranded_id_back_once(rclient: redis.Redis) -> None:
    scripts, rq = Scripts.register(rclient), RqKeys(QUEUE)
    rclient.rpush(rq.intermediate, "t-r1-0")
    rclient.set(rq.first_seen("t-r1-0"), 1)
    rescue_keys = [rq.intermediate, rq.queue, rq.first_seen("t-r1-0")]
    assert scripts.rescue_job(keys=rescue_keys, args=["t-r1-0"]) == 1
    assert scripts.rescue_job(keys=rescue_keys, args=["t-r1-0"]) == 0  # already moved on
    assert rclient.lrange(rq.queue, 0, -1) == [b"t-r1-0"]
    assert rclient.llen(rq.intermediate) == 0 and not rclient.exists(rq.first_seen("t-r1-0"))
