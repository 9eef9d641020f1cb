"""Redis Cluster for tests: a local cluster of real redis-server processes, and helpers that
read a sharded run's keys across the partitions."""

from __future__ import annotations

import redis
from redis.crc import key_slot

from exactsum.cluster import make_cluster_client, slot_owner
from exactsum.keys import Keys
from tests.procs import Services

# Fast fault detection for the cluster tests' consumers.
QUICK_LIVENESS = ("--heartbeat-ttl", "3", "--block-timeout", "0.5", "--reclaim-interval", "0.5")


class ClusterServices(Services):
    """Producer and consumer processes pointed at a cluster (``REDIS_CLUSTER=1``)."""

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(REDIS_CLUSTER="1", **extra)


def cluster_client(url: str) -> redis.Redis:
    return make_cluster_client(url, socket_timeout=10.0)


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    for key in list(client.scan_iter(match=f"{prefix}:*", count=1000)):
        client.delete(key)


def run_tags(client: redis.Redis, keys: Keys, run_id: str) -> list[str]:
    raw = client.hget(keys.run(run_id).meta, "partitions")
    assert raw, f"run {run_id} has no partitions in its meta"
    return str(raw.decode()).split(",")


def committed_by_partition(client: redis.Redis, keys: Keys, run_id: str) -> dict[str, int]:
    return {tag: int(client.get(keys.partition(tag).run(run_id).committed) or 0)
            for tag in run_tags(client, keys, run_id)}


def committed_on_cluster(client: redis.Redis, keys: Keys) -> int:
    """Items committed so far over every run and partition under ``keys``' prefix."""
    return sum(int(client.get(key) or 0)
               for key in client.scan_iter(match=f"{keys.prefix}:{{*}}:run:*:committed"))


def inflight_on_cluster(client: redis.Redis, keys: Keys, consumer_id: str) -> int:
    return sum(int(client.llen(key)) for key in client.scan_iter(
        match=f"{keys.prefix}:{{*}}:inflight:{consumer_id}:*"))


def primary_of_tag(client: redis.Redis, tag: str) -> str:
    return slot_owner(client, key_slot(tag.encode()))
