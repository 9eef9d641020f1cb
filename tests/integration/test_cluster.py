"""Redis Cluster: every script in one slot, and whole runs sharded over a real local cluster of
three primaries with a replica each (six redis-server processes), through a consumer SIGKILL
and a primary kill -9'd and failed over by the cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from consumer_service.settings import parse_settings as consumer_settings
from exactsum.audit import audit, dead_letter_entry
from exactsum.cluster import AckedScript, choose_tags, register_scripts
from exactsum.counters import Event
from exactsum.keys import Keys
from exactsum.protocol import encode
from exactsum.runs import RunPlan, create_run, pushed_bitmap, write_partition_metas
from producer_service.settings import parse_settings as producer_settings
from tests.cluster_harness import (
    ClusterServices,
    cluster_client,
    committed_by_partition,
    committed_on_cluster,
    delete_prefix,
    inflight_on_cluster,
    primary_of_tag,
    run_tags,
)
from tests.localcluster import LocalCluster
from tests.localredis import free_port
from tests.observing import scrape
from tests.observing import total as metric_total
from tests.procs import Proc, assert_exact, finish, numbers_file, wait_until

QUICK_LIVENESS = ("--heartbeat-ttl", "3", "--block-timeout", "0.5", "--reclaim-interval", "0.5")


@pytest.fixture
def fresh_cluster() -> Iterator[LocalCluster]:
    """Three primaries with a replica each; the test may kill nodes."""
    with LocalCluster(3, 1, node_timeout_ms=2000) as cluster:
        yield cluster


@pytest.fixture
def cluster_services(fresh_cluster: LocalCluster, key_prefix: str,
                     tmp_path: Path) -> Iterator[ClusterServices]:
    group = ClusterServices(fresh_cluster.url, key_prefix, tmp_path)
    yield group
    group.close()


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, 1) as cluster:
        yield cluster


@pytest.fixture
def cclient(shared_cluster: LocalCluster, key_prefix: str) -> Iterator[redis.Redis]:
    client = cluster_client(shared_cluster.url)
    yield client
    delete_prefix(client, key_prefix)
    client.close()


def one_slot(keys: list[str]) -> int:
    """The one slot ``keys`` map to; fails if they map to several."""
    slots = {key_slot(key.encode()) for key in keys}
    assert len(slots) == 1, f"keys in {len(slots)} slots: {keys}"
    return slots.pop()


def test_what_a_cluster_cannot_do_yet_is_refused_with_a_reason(
    capsys: pytest.CaptureFixture[str]
) -> None:
    for parse in (producer_settings, consumer_settings):
        with pytest.raises(SystemExit) as exit_info:
            parse(["--redis-cluster", "1", "--transport", "rq"])
        assert exit_info.value.code == 2
        assert "RQ cannot run on Redis Cluster" in capsys.readouterr().err
    assert consumer_settings(["--redis-cluster", "redis://10.0.0.5:7000"]).redis_cluster == (
        "redis://10.0.0.5:7000")


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


def spread_report(client: redis.Redis, keys: Keys, run_id: str) -> tuple[dict[str, int],
                                                                         Counter[str]]:
    by_partition = committed_by_partition(client, keys, run_id)
    by_primary: Counter[str] = Counter()
    for tag, items in by_partition.items():
        by_primary[primary_of_tag(client, tag)] += items
    return by_partition, by_primary


ITEMS = 1_000_000


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_million_items_over_a_cluster_with_a_consumer_sigkilled(
    cluster_services: ClusterServices, fresh_cluster: LocalCluster, keys: Keys, tmp_path: Path
) -> None:
    path, total = numbers_file(tmp_path, ITEMS)
    client = cluster_client(fresh_cluster.url)
    consumers = [cluster_services.consumer("--threads", "4", "--work-io-ms", "0.01",
                                           *QUICK_LIVENESS) for _ in range(3)]
    victim_id = cluster_services.consumer_id(consumers[0])
    producer = cluster_services.producer("--input", str(path), "--batch", "1000",
                                         "--run-id", "sharded", "--timeout", "500")
    wait_until(lambda: committed_on_cluster(client, keys) >= ITEMS // 5, 200,
               "a fifth committed")
    wait_until(lambda: inflight_on_cluster(client, keys, victim_id) > 0, 30,
               "the victim holding claims")
    consumers[0].signal(signal.SIGKILL)
    wait_until(lambda: inflight_on_cluster(client, keys, victim_id) == 0, 30, "the reclaim")
    report = finish(producer, timeout=500)
    assert_exact(report, ITEMS, total)
    reclaimed = sum(int(client.get(keys.partition(tag).reclaimed) or 0)
                    for tag in committed_by_partition(client, keys, "sharded"))
    assert reclaimed > 0
    by_partition, by_primary = spread_report(client, keys, "sharded")
    print(f"items per partition: {by_partition}; per primary: {dict(by_primary)}")
    # Six partitions, two per primary; batch n goes to partition n mod 6.
    assert len(by_partition) == 6 and sum(by_partition.values()) == ITEMS
    assert len(by_primary) == 3
    assert all(abs(items - ITEMS / 6) <= 1000 for items in by_partition.values())
    client.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_primary_killed_and_failed_over_mid_run_keeps_the_sum_exact(
    cluster_services: ClusterServices, fresh_cluster: LocalCluster, keys: Keys, tmp_path: Path
) -> None:
    path, total = numbers_file(tmp_path, ITEMS)
    client = cluster_client(fresh_cluster.url)
    acked = ("--min-replicas", "1", "--replica-timeout", "2")
    consumers = [cluster_services.consumer("--threads", "4", "--work-io-ms", "0.01",
                                           *QUICK_LIVENESS, *acked) for _ in range(3)]
    # A bounded queue keeps the producer pushing through the failover too.
    producer = cluster_services.producer("--input", str(path), "--batch", "1000",
                                         "--max-queue", "60000", "--run-id", "failover",
                                         "--timeout", "500", *acked)
    wait_until(lambda: committed_on_cluster(client, keys) >= ITEMS // 4, 200,
               "a quarter committed")
    by_partition = committed_by_partition(client, keys, "failover")
    victim_name = primary_of_tag(client, next(iter(by_partition)))
    victim_tags = [tag for tag in by_partition if primary_of_tag(client, tag) == victim_name]
    victim = fresh_cluster.node_for_port(int(victim_name.rsplit(":", 1)[1]))
    before = committed_on_cluster(client, keys)
    victim.kill()
    killed_at = time.monotonic()

    def promoted() -> bool:
        live = fresh_cluster.primary_nodes()
        return len(live) == 3 and victim not in live

    wait_until(promoted, 60, "a replica promoted in the killed primary's place", interval=0.2)
    promoted_s = time.monotonic() - killed_at

    def victims_committed() -> int:
        try:
            fresh = cluster_client(fresh_cluster.live_url())
            try:
                return sum(committed_by_partition(fresh, keys, "failover")[t]
                           for t in victim_tags)
            finally:
                fresh.close()
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            return -1

    wait_until(lambda: victims_committed() >= 0, 60, "the promoted primary answering")
    on_promoted = victims_committed()
    # Back as a replica of the promoted one: WAIT 1 can be satisfied again on those slots
    # (until then the promoted primary has no replica, and nothing there is acknowledged).
    victim.start()
    wait_until(lambda: victims_committed() > on_promoted, 120,
               "a commit in the failed-over partitions", interval=0.1)
    print(f"replica promoted {promoted_s:.1f} s after the kill; first commit on it "
          f"{time.monotonic() - killed_at:.1f} s after the kill (once the old primary was back "
          "as its replica)")
    fresh_cluster.wait_healthy(120)
    report = finish(producer, timeout=500)
    assert_exact(report, ITEMS, total)
    assert before < ITEMS, "the kill came after the run had finished"
    retried = [p.name for p in consumers if p.counter(Event.REDIS_RETRY) > 0]
    assert retried, "no consumer saw the failover"
    client.close()


@pytest.fixture
def shared_services(shared_cluster: LocalCluster, key_prefix: str,
                    tmp_path: Path) -> Iterator[ClusterServices]:
    group = ClusterServices(shared_cluster.url, key_prefix, tmp_path)
    yield group
    group.close()
    client = cluster_client(shared_cluster.url)
    delete_prefix(client, key_prefix)
    client.close()


def admin(services: ClusterServices, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exactsum_admin", *args], capture_output=True,
                          text=True, timeout=60, env=services.env())


@pytest.mark.timeout(180)
def test_dead_letters_of_a_sharded_run_are_listed_requeued_and_audited_over_partitions(
    shared_services: ClusterServices, tmp_path: Path
) -> None:
    """Poison items end in the dead letters of several partitions; the admin lists them all,
    requeues them into their own partitions, and the run's audit is exact afterwards."""
    items = 20_000
    path, total = numbers_file(tmp_path, items)
    poisoned = [shared_services.consumer("--threads", "2", "--fail-rate", "0.002",
                                         "--max-attempts", "2") for _ in range(2)]
    producer = shared_services.producer("--input", str(path), "--batch", "100",
                                        "--run-id", "poison", "--partitions", "4")
    assert producer.wait(timeout=120) == 3, producer.stderr[-2000:]
    report = producer.report()
    assert (report["lost"], report["duplicated"]) == (0, 0), report
    assert report["sum"] + report["dead_sum"] == total
    dead_batches = report["dead_lettered"] // 100
    assert dead_batches >= 2
    listed = admin(shared_services, "dead", "list", "--run", "poison", "--json")
    assert listed.returncode == 0, listed.stderr
    seqs = [json.loads(line)["seq"] for line in listed.stdout.splitlines()]
    assert len(seqs) == dead_batches
    assert len({seq % 4 for seq in seqs}) >= 2 or dead_batches < 4
    for proc in poisoned:
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    shared_services.consumer("--threads", "2")
    requeued = admin(shared_services, "dead", "requeue", "--run", "poison", "--all")
    assert requeued.returncode == 0, requeued.stderr
    assert f"requeue: {dead_batches} of {dead_batches} entries" in requeued.stdout

    def audited() -> dict[str, object]:
        result = admin(shared_services, "audit", "--run", "poison", "--json")
        return dict(json.loads(result.stdout))

    wait_until(lambda: audited()["exact"] is True, 60, "the requeued batches counted")
    final = audited()
    assert final["sum"] == total and final["committed"] == items, final
    # status adds the partitions up as well
    shown = subprocess.run([sys.executable, "-m", "observe.status", "--json"],
                           capture_output=True, text=True, timeout=60, env=shared_services.env())
    assert shown.returncode == 0, shown.stderr
    snap = json.loads(shown.stdout)
    run = next(r for r in snap["runs"] if r["run_id"] == "poison")
    assert (run["committed"], run["sum"], run["pushed"]) == (items, total, items), run
    assert sum(run["by_consumer"].values()) == items
    assert snap["queue_depth"] == 0 and snap["inflight_batches"] == 0
    assert any(c["alive"] for c in snap["consumers"])


@pytest.mark.timeout(180)
def test_metrics_on_a_cluster_add_the_partitions_up(
    shared_services: ClusterServices, tmp_path: Path
) -> None:
    items = 20_000
    path, total_sum = numbers_file(tmp_path, items)
    port = free_port()
    shared_services.consumer("--threads", "2", "--work-io-ms", "0.3", "--metrics-port",
                             str(port), "--metrics-addr", "127.0.0.1")
    producer = shared_services.producer("--input", str(path), "--batch", "100",
                                        "--run-id", "metered")

    def waiting_and_held() -> bool:
        try:
            samples = scrape(port)
        except OSError:
            return False
        return (metric_total(samples, "exactsum_redis_up") == 1
                and metric_total(samples, "exactsum_queue_depth_batches") > 0
                and metric_total(samples, "exactsum_inflight_batches") > 0)

    wait_until(waiting_and_held, 60, "queued and in-flight batches seen in the metrics")
    report = finish(producer, timeout=150)
    assert_exact(report, items, total_sum)
    final = scrape(port)
    assert metric_total(final, "exactsum_items_committed_total", run="metered") == items
    assert metric_total(final, "exactsum_queue_depth_batches") == 0


@pytest.mark.timeout(180)
def test_consumers_started_before_any_run_follow_runs_with_new_partitions(
    shared_services: ClusterServices, tmp_path: Path
) -> None:
    """Consumers that start with no partition registered pick up a run of 2 partitions, then a
    run of 5 more (a partition set that grew while they ran): both exact."""
    consumers = [shared_services.consumer("--threads", "2") for _ in range(2)]
    for proc in consumers:
        shared_services.consumer_id(proc)
    for run_id, partitions, seed in (("first", "2", 3), ("second", "7", 4)):
        path, total_sum = numbers_file(tmp_path, 30_000, seed)
        report = finish(shared_services.producer(
            "--input", str(path), "--batch", "100", "--run-id", run_id, "--partitions",
            partitions, name=f"producer-{run_id}"), timeout=150)
        assert_exact(report, 30_000, total_sum)
    client = cluster_client(shared_services.redis_url)
    by_partition = committed_by_partition(client, shared_services.keys, "second")
    assert len(by_partition) == 7 and min(by_partition.values()) > 0, by_partition
    client.close()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_partitioned_run_resumes_exactly_after_its_producer_is_sigkilled(
    shared_cluster: LocalCluster, key_prefix: str, keys: Keys, tmp_path: Path
) -> None:
    """A producer of a run over 4 partitions is SIGKILLed mid-push; the same command resumes
    it (asked for 2 partitions, it keeps the run's 4 tags), every partition's copy of the meta
    takes the new epoch, and the run is exact with nothing pushed twice."""
    run_id, items, batch = "resume-me", 300_000, 1000
    path, total = numbers_file(tmp_path, items)
    services = ClusterServices(shared_cluster.url, key_prefix, tmp_path)
    client = cluster_client(shared_cluster.url)

    def pushed() -> int:
        return sum(bin(byte).count("1") for byte in pushed_bitmap(client, keys, run_id))

    def producer(partitions: int, name: str) -> Proc:
        return services.producer("--input", str(path), "--batch", str(batch), "--run-id",
                                 run_id, "--max-queue", "20000", "--partitions",
                                 str(partitions), "--timeout", "300", name=name)

    try:
        for _ in range(2):  # slow consumers: the producer waits on the queue's bound
            services.consumer("--threads", "2", "--work-io-ms", "0.05", *QUICK_LIVENESS)
        first = producer(4, "first")
        wait_until(lambda: pushed() >= 30, 120, "30 batches pushed")
        first.signal(signal.SIGKILL)
        first.wait(timeout=10)
        at_kill = pushed()
        assert 30 <= at_kill < items // batch, "the kill must land mid-push"
        tags = run_tags(client, keys, run_id)
        assert len(tags) == 4

        report = finish(producer(2, "resumed"), timeout=300)
        assert_exact(report, items, total)
        assert report["resumed"] is True and report["epoch"] == 2
        assert at_kill * batch <= int(report["pushed_before"]) < items
        assert run_tags(client, keys, run_id) == tags
        for tag in tags:
            part = keys.partition(tag)
            rk = part.run(run_id)
            assert client.hget(rk.meta, "epoch") == b"2"
            assert int(client.get(rk.stale) or 0) == 0, "a batch was pushed twice"
            assert client.llen(part.queue) == 0
        assert pushed() == items // batch
        assert report["stale_commits"] == 0 and report["duplicated"] == 0
    finally:
        services.close()
        delete_prefix(client, key_prefix)
        client.close()
