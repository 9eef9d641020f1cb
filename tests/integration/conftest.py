"""Fixtures of the Redis Cluster tests (test_cluster*.py): a cluster of the test's own, which it
may kill nodes of, and one a module shares, each with its services and a client that cleans up
after itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.cluster_harness import ClusterServices, cluster_client, delete_prefix
from tests.localcluster import LocalCluster


@contextmanager
def services_on(cluster: LocalCluster, key_prefix: str, tmp_path: Path, *,
                delete_keys: bool) -> Iterator[ClusterServices]:
    """Services on ``cluster``, stopped afterwards; with ``delete_keys``, the test's keys are
    deleted too (a cluster that outlives the test; not one whose nodes the test may have
    killed)."""
    group = ClusterServices(cluster.url, key_prefix, tmp_path)
    try:
        yield group
    finally:
        group.close()
        if delete_keys:
            client = cluster_client(cluster.url)
            delete_prefix(client, key_prefix)
            client.close()


@pytest.fixture
def fresh_cluster() -> Iterator[LocalCluster]:
    """Three primaries with a replica each; the test may kill nodes."""
    with LocalCluster(3, 1, node_timeout_ms=2000) as cluster:
        yield cluster


@pytest.fixture
def cluster_services(fresh_cluster: LocalCluster, key_prefix: str,
                     tmp_path: Path) -> Iterator[ClusterServices]:
    with services_on(fresh_cluster, key_prefix, tmp_path, delete_keys=False) as group:
        yield group


@pytest.fixture
def fresh_client(fresh_cluster: LocalCluster) -> Iterator[redis.Redis]:
    """A client of the test's own cluster, closed however the test ends."""
    client = cluster_client(fresh_cluster.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[LocalCluster]:
    """Three primaries with a replica each, for the tests of a module that kill no node."""
    with LocalCluster(3, 1) as cluster:
        yield cluster


@pytest.fixture
def cclient(shared_cluster: LocalCluster, key_prefix: str) -> Iterator[redis.Redis]:
    """A client of the shared cluster; the test's keys are deleted afterwards."""
    client = cluster_client(shared_cluster.url)
    yield client
    delete_prefix(client, key_prefix)
    client.close()


@pytest.fixture
def shared_services(shared_cluster: LocalCluster, key_prefix: str,
                    tmp_path: Path) -> Iterator[ClusterServices]:
    with services_on(shared_cluster, key_prefix, tmp_path, delete_keys=True) as group:
        yield group
