"""Least-privilege users on a Redis Cluster: the ACL file of ``exactsum_admin.acl``, loaded by
every node, lets the services run a partitioned run with their own users (tagged key names,
the slot map, WAIT after every script with a replica per primary, ASKING while a slot moves),
and still refuses each user what it must not do there."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from exactsum.keys import Keys
from exactsum_admin.acl import acl_file
from tests.cluster_harness import ClusterServices, committed_on_cluster, run_tags
from tests.localcluster import LocalCluster
from tests.procs import assert_exact, finish, numbers_file, wait_until

PASSWORDS = {user: f"{user}-secret-password" for user in ("producer", "consumer", "admin")}
ACKED = ("--min-replicas", "1", "--replica-timeout", "2")


@pytest.fixture
def acl_cluster(tmp_path: Path, key_prefix: str) -> Iterator[LocalCluster]:
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(acl_file(key_prefix, PASSWORDS))
    with LocalCluster(3, 1, acl_file=aclfile, admin=("admin", PASSWORDS["admin"])) as cluster:
        yield cluster


def as_user(cluster: LocalCluster, user: str) -> RedisCluster:
    return RedisCluster.from_url(cluster.url, username=user, password=PASSWORDS[user],
                                 socket_timeout=10)


def creds(user: str) -> dict[str, str]:
    return {"REDIS_USERNAME": user, "REDIS_PASSWORD": PASSWORDS[user]}


@pytest.mark.timeout(180)
def test_a_partitioned_run_is_exact_with_the_services_own_users_on_a_cluster(
    acl_cluster: LocalCluster, key_prefix: str, keys: Keys, tmp_path: Path
) -> None:
    services = ClusterServices(acl_cluster.url, key_prefix, tmp_path)
    try:
        failing = [services.consumer("--threads", "2", "--fail-rate", "0.001", *ACKED,
                                     **creds("consumer")) for _ in range(2)]
        path, total = numbers_file(tmp_path, 20_000)
        producer = services.producer("--input", str(path), "--batch", "10", "--run-id", "acl",
                                     "--partitions", "4", *ACKED, **creds("producer"))
        assert producer.wait(timeout=150) in (0, 3), producer.stderr[-2000:]
        report = producer.report()
        assert (report["lost"], report["duplicated"]) == (0, 0), report
        assert report["sum"] + report["dead_sum"] == total
        assert report["dead_lettered"] > 0  # the dead-letter scripts ran under the ACL too
        for proc in failing:  # the second run is counted by a consumer that never fails
            proc.signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, proc.stderr[-2000:]
        clean = services.producer("--input", str(path), "--batch", "100", "--run-id", "clean",
                                  *ACKED, **creds("producer"), name="producer-clean")
        services.consumer("--threads", "2", *ACKED, **creds("consumer"))
        clean_report = finish(clean, timeout=150)
        assert_exact(clean_report, 20_000, total)
        logs = "".join(proc.stderr for proc in services.procs)
        assert "NOPERM" not in logs and "NoPermission" not in logs, logs[-3000:]
    finally:
        services.close()
    admin = cast(redis.Redis, as_user(acl_cluster, "admin"))
    tag = run_tags(admin, keys, "acl")[0]
    part = keys.partition(tag).run("acl")
    producer_client, consumer_client = as_user(acl_cluster, "producer"), as_user(acl_cluster,
                                                                                 "consumer")
    try:
        # A partition's sum is the consumers' to write, its pushed bitmap the producer's.
        with pytest.raises(redis.exceptions.NoPermissionError):
            producer_client.incrby(part.sum, 1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            consumer_client.setbit(part.pushed, 0, 1)
        # ...and inside a script too.
        with pytest.raises(redis.exceptions.NoPermissionError):
            producer_client.eval("return redis.call('INCRBY', KEYS[1], 1)", 1, part.sum)
        assert int(producer_client.get(part.sum) or 0) > 0  # reading it is allowed
    finally:
        for client in (admin, producer_client, consumer_client):
            client.close()


@pytest.mark.timeout(300)
def test_partitions_resharded_mid_run_are_followed_by_the_services_own_users(
    acl_cluster: LocalCluster, key_prefix: str, keys: Keys, tmp_path: Path
) -> None:
    """While each partition's slot moves to another primary key by key, scripts meet ASK (and
    TRYAGAIN while a slot's keys are split): the producer's and consumers' own users must be
    allowed to follow them (ASKING), and the run stays exact."""
    items = 100_000
    admin = cast(redis.Redis, as_user(acl_cluster, "admin"))
    services = ClusterServices(acl_cluster.url, key_prefix, tmp_path)
    try:
        consumers = [services.consumer("--threads", "2", "--work-io-ms", "0.02", *ACKED,
                                       **creds("consumer")) for _ in range(2)]
        path, total = numbers_file(tmp_path, items, seed=21)
        producer = services.producer("--input", str(path), "--batch", "100", "--max-queue",
                                     "10000", "--run-id", "moved", "--partitions", "2",
                                     "--timeout", "240", *ACKED, **creds("producer"))
        wait_until(lambda: committed_on_cluster(admin, keys) >= items // 10, 120,
                   "a tenth committed")
        primaries = acl_cluster.primary_nodes()
        moved = 0
        for tag in run_tags(admin, keys, "moved"):
            slot = key_slot(tag.encode())
            source = acl_cluster.owner_of_slot(slot)
            target = primaries[(primaries.index(source) + 1) % len(primaries)]
            moved += acl_cluster.migrate_slot(slot, target, keys_per_step=1, pause_s=0.05)
            assert acl_cluster.owner_of_slot(slot) is target
        # The moves ended before the run did: the services met them in full flow.
        assert committed_on_cluster(admin, keys) < items
        assert moved > 0
        report = finish(producer, timeout=240)
        assert_exact(report, items, total)
        for proc in consumers:
            proc.signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, proc.stderr[-2000:]
    finally:
        services.close()
        admin.close()
