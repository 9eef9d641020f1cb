"""The compose profile `ha`: one primary, two replicas, three Sentinels, the pair pointed at the
Sentinels; the primary's container is killed mid-run and the run stays exact."""

from __future__ import annotations

from typing import Any

import pytest

from .stack import Stack, assert_exact, wait_for

pytestmark = pytest.mark.e2e

NODES = ("redis-ha-1", "redis-ha-2", "redis-ha-3")


def primary(stack: Stack) -> str | None:
    """The node the Sentinels name (asked inside sentinel-1's container)."""
    result = stack.compose("exec", "-T", "sentinel-1", "redis-cli", "-p", "26379", "--raw",
                           "sentinel", "get-master-addr-by-name", "mymaster", check=False,
                           timeout=30)
    lines = result.stdout.split()
    return lines[0] if result.returncode == 0 and lines and lines[0] in NODES else None


def node_cli(stack: Stack, node: str, *args: str) -> list[str]:
    result = stack.compose("exec", "-T", node, "redis-cli", "--raw", *args, check=False,
                           timeout=30)
    return result.stdout.split() if result.returncode == 0 else []


def committed(stack: Stack, node: str, run_id: str) -> int:
    lines = node_cli(stack, node, "GET", stack.keys.run(run_id).committed)
    return int(lines[0]) if lines else 0


@pytest.mark.timeout(420)
def test_ha_profile_survives_a_killed_primary(make_stack: Any) -> None:
    count, run_id = 200_000, "ha-e2e"
    stack: Stack = make_stack({
        "PRODUCER_COUNT": str(count), "PRODUCER_BATCH": "500", "PRODUCER_JSON": "1",
        # Paced to about 20 s, so that the failover lands mid-run.
        "PRODUCER_RATE": "10000", "PRODUCER_RUN_ID": run_id, "CONSUMER_REPLICAS": "2",
        "SENTINEL_DOWN_AFTER_MS": "1000", "SENTINEL_FAILOVER_TIMEOUT_MS": "5000",
        "REDIS_HEALTH_INTERVAL": "1s",
    })
    stack.compose("up", "--no-build", "--detach", "ha-producer", timeout=300)
    first = wait_for("the Sentinels to name redis-ha-1", lambda: primary(stack), timeout=60)
    assert first == "redis-ha-1"
    wait_for("a quarter of the run committed",
             lambda: committed(stack, first, run_id) >= count // 4, timeout=120)

    stack.compose("kill", "-s", "SIGKILL", first)
    promoted = wait_for("a replica promoted",
                        lambda: (p := primary(stack)) not in (None, first) and p, timeout=90)
    # The old primary comes back (as a machine would) and is made a replica of the new one.
    stack.compose("start", first)
    wait_for(f"{first} replicating from {promoted}",
             lambda: "master_link_status:up" in node_cli(stack, first, "INFO", "replication"),
             timeout=120)

    producer = stack.container("ha-producer")
    status = stack.wait_exit(producer, timeout=240)
    report = Stack.report(producer)
    assert status == 0, report
    assert_exact(report, count)
    # The audit read the new primary; every node, the old primary included, agrees with it.
    for node in NODES:
        wait_for(f"{node} caught up", lambda n=node: committed(stack, n, run_id) == count,
                 timeout=60)
