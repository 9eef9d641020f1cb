"""Fixtures: a real redis-server, a key prefix of each test's own, and service processes.

A session-wide ``redis-server`` is started from PATH on a free port (or ``TEST_REDIS_URL`` is
used when set). Tests never flush a database: each gets a fresh key prefix and its keys are
deleted afterwards, so tests cannot see each other's state even on a shared server. Tests that
kill Redis get a server of their own (``own_redis``).
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from exactsum.keys import Keys
from exactsum.scripts import Scripts
from tests.localredis import LocalRedis
from tests.localsentinel import LocalSentinelGroup
from tests.procs import Services


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    with LocalRedis() as server:
        yield server.url


@pytest.fixture
def key_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def client(redis_url: str, key_prefix: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url, socket_timeout=10)
    yield conn
    for key in conn.scan_iter(match=f"{key_prefix}:*", count=1000):
        conn.delete(key)
    conn.close()


@pytest.fixture
def scripts(client: redis.Redis) -> Scripts:
    return Scripts.register(client)


@pytest.fixture
def own_redis() -> Iterator[LocalRedis]:
    """A redis-server of the test's own, which it may kill and restart."""
    server = LocalRedis()
    server.start()
    yield server
    server.close()


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[LocalRedis, LocalRedis]]:
    """A primary and its replica (tests/integration/test_sentinel*.py: WAIT without Sentinel)."""
    (tmp_path / "primary").mkdir()
    (tmp_path / "replica").mkdir()
    primary = LocalRedis(data_dir=tmp_path / "primary")
    replica = LocalRedis(data_dir=tmp_path / "replica",
                         extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    try:
        primary.start()
        replica.start()
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[LocalSentinelGroup]:
    """A primary, two replicas and three Sentinels that fail over within seconds.

    Assembling the group is the harness' part, not the test's: one that does not get ready
    (Sentinels that never see each other) is said as a warning, with what each Sentinel knew,
    and built once more on new ports before the test is given up."""
    for attempt in (1, 2):
        group = LocalSentinelGroup(replicas=2, sentinels=3, down_after_ms=1000,
                                   failover_timeout_ms=5000, min_replicas_to_write=1,
                                   work_dir=tmp_path / f"sentinel{attempt}")
        try:
            group.start()
        except (TimeoutError, RuntimeError) as exc:
            group.kill_all()
            group.close()
            if attempt == 2:
                raise
            warnings.warn(f"the Sentinel group did not get ready; building it again: {exc}",
                          stacklevel=1)
            continue
        try:
            yield group
        finally:
            group.kill_all()
            group.close()
        return


@pytest.fixture
def services(redis_url: str, key_prefix: str, tmp_path: object) -> Iterator[Services]:
    group = Services(redis_url, key_prefix, tmp_path)  # type: ignore[arg-type]
    yield group
    group.close()


@pytest.fixture
def own_services(own_redis: LocalRedis, key_prefix: str, tmp_path: object) -> Iterator[Services]:
    group = Services(own_redis.url, key_prefix, tmp_path)  # type: ignore[arg-type]
    yield group
    group.close()


# Tests live in a folder of their kind; each kind is also a marker (``pytest -m unit``).
KINDS = ("unit", "integration", "e2e", "chaos")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        try:
            kind = item.path.relative_to(tests_dir).parts[0]
        except ValueError:
            continue
        if kind in KINDS:
            item.add_marker(kind)
