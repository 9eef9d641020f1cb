"""The compose profile `ha`: one primary, two replicas, three Sentinels, the pair pointed at the
Sentinels; the primary's container hangs mid-run (docker pause: the nastier failure, since it
comes back alive believing it is the primary) and the run stays exact.

Not a kill here: a killed container's name leaves Docker's DNS, and Sentinel resolves names
synchronously; on a host whose DNS servers do not answer (this project's machines) each lookup
of the dead name then blocks every Sentinel for seconds and the failover stalls (see
docs/sentinel.md). tests/integration/test_sentinel.py kills primaries with SIGKILL on loopback."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.procs import assert_exact, random_sum

from .stack import Stack, wait_for

pytestmark = pytest.mark.e2e

NODES = ("redis-ha-1", "redis-ha-2", "redis-ha-3")


def cli(stack: Stack, service: str, *args: str) -> list[str]:
    """redis-cli inside a service's container; nothing while it does not answer (an exec on
    a busy engine can hang: the callers poll)."""
    try:
        result = stack.compose("exec", "-T", service, "redis-cli", "--raw", *args,
                               check=False, timeout=30)
    except subprocess.TimeoutExpired:
        return []
    return result.stdout.split() if result.returncode == 0 else []


def primary(stack: Stack) -> str | None:
    """The node the Sentinels name (asked inside sentinel-1's container)."""
    lines = cli(stack, "sentinel-1", "-p", "26379", "sentinel", "get-master-addr-by-name",
                "mymaster")
    return lines[0] if lines and lines[0] in NODES else None


def node_cli(stack: Stack, node: str, *args: str) -> list[str]:
    return cli(stack, node, *args)


def committed(stack: Stack, node: str, run_id: str) -> int:
    lines = node_cli(stack, node, "GET", stack.keys.run(run_id).committed)
    return int(lines[0]) if lines else 0


@pytest.mark.timeout(420)
def test_ha_profile_survives_a_hung_primary(make_stack: Any) -> None:
    count, run_id, seed = 200_000, "ha-e2e", 13
    stack: Stack = make_stack({
        "PRODUCER_COUNT": str(count), "PRODUCER_BATCH": "500", "PRODUCER_JSON": "1",
        "PRODUCER_SEED": str(seed),  # so that the test knows the sum (random_sum)
        # Paced to about 20 s, so that the failover lands mid-run.
        "PRODUCER_RATE": "10000", "PRODUCER_RUN_ID": run_id, "CONSUMER_REPLICAS": "2",
        "SENTINEL_DOWN_AFTER_MS": "1000", "SENTINEL_FAILOVER_TIMEOUT_MS": "5000",
        "REDIS_HEALTH_INTERVAL": "1s",
        # So that the stack's own `logs` and `down -v` include the profile's services and
        # volumes (the stack's helpers name no profile).
        "COMPOSE_PROFILES": "ha",
    })
    stack.compose("up", "--no-build", "--detach", "ha-producer", timeout=300)
    first = wait_for("the Sentinels to name redis-ha-1", lambda: primary(stack), timeout=60)
    assert first == "redis-ha-1"
    wait_for("a quarter of the run committed",
             lambda: committed(stack, first, run_id) >= count // 4, timeout=120)

    stack.compose("pause", first)
    try:
        promoted = wait_for("a replica promoted",
                            lambda: (p := primary(stack)) not in (None, first) and p,
                            timeout=90)
    finally:
        # The old primary wakes up believing it is the primary; Sentinel makes it a replica.
        stack.compose("unpause", first)
    wait_for(f"{first} replicating from {promoted}",
             lambda: "master_link_status:up" in node_cli(stack, first, "INFO", "replication"),
             timeout=120)

    producer = stack.container("ha-producer")
    status = stack.wait_exit(producer, timeout=240)
    report = Stack.report(producer)
    assert status == 0, report
    assert_exact(report, count, random_sum(count, seed))
    # The audit read the new primary; every node, the old primary included, agrees with it.
    for node in NODES:
        wait_for(f"{node} caught up", lambda n=node: committed(stack, n, run_id) == count,
                 timeout=60)
