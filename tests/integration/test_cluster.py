"""Redis Cluster: whole runs sharded over a real local cluster of three primaries with a replica
each (six redis-server processes), through a consumer SIGKILL and a primary kill -9'd and failed
over by the cluster; their dead letters, metrics, partitions and resume. The scripts one by one
are in test_cluster_scripts.py, the cluster fixtures in conftest.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from consumer_service.settings import parse_settings as consumer_settings
from exactsum.counters import Event
from exactsum.keys import Keys
from exactsum.runs import pushed_bitmap
from producer_service.settings import parse_settings as producer_settings
from tests.cluster_harness import (
    QUICK_LIVENESS,
    ClusterServices,
    cluster_client,
    committed_by_partition,
    committed_on_cluster,
    inflight_on_cluster,
    primary_of_tag,
    run_tags,
)
from tests.localcluster import LocalCluster
from tests.localredis import free_port
from tests.observing import scrape
from tests.observing import total as metric_total
from tests.procs import Proc, assert_exact, finish, numbers_file, wait_until


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


def spread_report(client: redis.Redis, keys: Keys, run_id: str) -> tuple[dict[str, int],
                                                                         Counter[str]]:
    by_partition = committed_by_partition(client, keys, run_id)
    by_primary: Counter[str] = Counter()
    for tag, items in by_partition.items():
        by_primary[primary_of_tag(client, tag)] += items
    return by_partition, by_primary


ITEMS = 1_000_000


def start_sharded_run(services: ClusterServices, client: redis.Redis, keys: Keys,
                      tmp_path: Path, run_id: str, share: int, *extra: str,
                      producer_args: tuple[str, ...] = ()) -> tuple[list[Proc], Proc, int]:
    """Three consumers and a producer of ``ITEMS`` numbers in batches of 1000 over the fresh
    cluster (``extra`` to both, ``producer_args`` to the producer); returns once 1/``share`` of
    the run is committed, so that the fault lands mid-run: the consumers, the producer and the
    test's own sum of the input."""
    path, total = numbers_file(tmp_path, ITEMS)
    consumers = [services.consumer("--threads", "4", "--work-io-ms", "0.01", *QUICK_LIVENESS,
                                   *extra) for _ in range(3)]
    producer = services.producer("--input", str(path), "--batch", "1000", "--run-id", run_id,
                                 "--timeout", "500", *producer_args, *extra)
    wait_until(lambda: committed_on_cluster(client, keys) >= ITEMS // share, 200,
               f"1/{share} of the run committed")
    return consumers, producer, total


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_million_items_over_a_cluster_with_a_consumer_sigkilled(
    cluster_services: ClusterServices, fresh_client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    client = fresh_client
    consumers, producer, total = start_sharded_run(cluster_services, client, keys, tmp_path,
                                                   "sharded", 5)
    victim_id = cluster_services.consumer_id(consumers[0])
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


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_primary_killed_and_failed_over_mid_run_keeps_the_sum_exact(
    cluster_services: ClusterServices, fresh_cluster: LocalCluster, fresh_client: redis.Redis,
    keys: Keys, tmp_path: Path
) -> None:
    client = fresh_client
    # A bounded queue keeps the producer pushing through the failover too.
    consumers, producer, total = start_sharded_run(
        cluster_services, client, keys, tmp_path, "failover", 4,
        "--min-replicas", "1", "--replica-timeout", "2", producer_args=("--max-queue", "60000"))
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


def run_module(services: ClusterServices, module: str,
               *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` (the admin, status) with the services' settings."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, timeout=60, env=services.env())


def admin(services: ClusterServices, *args: str) -> subprocess.CompletedProcess[str]:
    return run_module(services, "exactsum_admin", *args)


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
    shown = run_module(shared_services, "observe.status", "--json")
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
    shared_services: ClusterServices, cclient: redis.Redis, tmp_path: Path
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
    by_partition = committed_by_partition(cclient, shared_services.keys, "second")
    assert len(by_partition) == 7 and min(by_partition.values()) > 0, by_partition


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_partitioned_run_resumes_exactly_after_its_producer_is_sigkilled(
    shared_services: ClusterServices, cclient: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """A producer of a run over 4 partitions is SIGKILLed mid-push; the same command resumes
    it (asked for 2 partitions, it keeps the run's 4 tags), every partition's copy of the meta
    takes the new epoch, and the run is exact with nothing pushed twice."""
    run_id, items, batch = "resume-me", 300_000, 1000
    path, total = numbers_file(tmp_path, items)
    client = cclient

    def pushed() -> int:
        return sum(bin(byte).count("1") for byte in pushed_bitmap(client, keys, run_id))

    def producer(partitions: int, name: str) -> Proc:
        return shared_services.producer("--input", str(path), "--batch", str(batch),
                                        "--run-id", run_id, "--max-queue", "20000",
                                        "--partitions", str(partitions), "--timeout", "300",
                                        name=name)

    for _ in range(2):  # slow consumers: the producer waits on the queue's bound
        shared_services.consumer("--threads", "2", "--work-io-ms", "0.05", *QUICK_LIVENESS)
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
