"""One fresh redis-server per measured run, with the settings the project's guarantees assume."""

from __future__ import annotations

from typing import Any

import redis

from exactsum.cluster import make_cluster_client
from tests.localcluster import LocalCluster
from tests.localredis import LocalRedis

# The project runs Redis with appendonly yes and appendfsync always (see tests/localredis.py):
# a commit acknowledged is on disk. Every queue in the benchmark runs against the same settings.
DEFAULT_FSYNC = "always"


def start(fsync: str = DEFAULT_FSYNC) -> LocalRedis:
    server = LocalRedis(fsync=fsync)
    server.start()
    return server


def start_cluster(primaries: int, replicas: int, fsync: str = DEFAULT_FSYNC) -> LocalCluster:
    cluster = LocalCluster(primaries, replicas, fsync=fsync)
    try:
        cluster.start()
    except BaseException:
        cluster.close()
        raise
    return cluster


def client_of(backend: LocalRedis | LocalCluster) -> redis.Redis:
    if isinstance(backend, LocalCluster):
        return make_cluster_client(backend.url, socket_timeout=10.0)
    return backend.client()


def first_node(backend: LocalRedis | LocalCluster) -> redis.Redis:
    """A plain client of one server (a cluster's first primary: its commands are a share)."""
    return backend.nodes[0].client() if isinstance(backend, LocalCluster) else backend.client()


def cpu_seconds_of(backend: LocalRedis | LocalCluster) -> float:
    """CPU time of every redis-server process of the run."""
    nodes = backend.nodes if isinstance(backend, LocalCluster) else [backend]
    return sum(cpu_seconds(node.client()) for node in nodes)


def cpu_seconds(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_stats(client: redis.Redis, top: int = 8) -> list[dict[str, Any]]:
    """The commands that took the most Redis time: calls, total and per-call microseconds."""
    info: dict[str, Any] = client.info("commandstats")
    rows: list[dict[str, Any]] = []
    for name, stats in info.items():
        rows.append({"command": name.removeprefix("cmdstat_"), "calls": int(stats["calls"]),
                     "usec": int(stats["usec"]),
                     "usec_per_call": float(stats["usec_per_call"])})
    rows.sort(key=lambda row: row["usec"], reverse=True)
    return rows[:top]
