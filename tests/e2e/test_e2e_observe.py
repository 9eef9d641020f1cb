"""Seeing the compose stack work: the dashboard on the host's loopback, `status` in its
container, and each consumer replica's metrics inside the project network, all agreeing with
the producer's audit of a run."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import assert_exact, random_sum

from .stack import Stack, wait_for

pytestmark = pytest.mark.e2e

SCRAPE = ("import urllib.request; print(urllib.request.urlopen("
          "'http://127.0.0.1:9100/metrics', timeout=5).read().decode())")


def committed_by(metrics_text: str) -> dict[str, float]:
    """exactsum_items_committed_total per consumer label."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "exactsum_items_committed_total":
                consumer = sample.labels["consumer"]
                found[consumer] = found.get(consumer, 0) + sample.value
    return found


def dashboard_state(port: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as reply:
            state: dict[str, Any] = json.loads(reply.read())
            return state
    except OSError:
        return None


@pytest.mark.timeout(300)
def test_dashboard_status_and_metrics_agree_with_the_audit(make_stack: Any) -> None:
    seed = 17  # so that the test knows the run's sum (random_sum)
    stack: Stack = make_stack({"PRODUCER_JSON": "1", "CONSUMER_REPLICAS": "2",
                               "PRODUCER_COUNT": "200000", "PRODUCER_SEED": str(seed),
                               "DASHBOARD_INTERVAL": "0.5"})
    port = stack.env["DASHBOARD_PORT"]
    stack.up()
    producer = stack.container("producer")
    assert stack.wait_exit(producer, 180) == 0
    report = Stack.report(producer)
    expected_sum = random_sum(200_000, seed)
    assert_exact(report, 200_000, expected_sum)
    run_id = report["run_id"]

    # The dashboard, from the host: published on the loopback only, and it shows the audit.
    dashboard = stack.container("dashboard")
    dashboard.reload()
    bindings = dashboard.attrs["NetworkSettings"]["Ports"]["8080/tcp"]
    assert {(b["HostIp"], b["HostPort"]) for b in bindings} == {("127.0.0.1", port)}

    def run_seen() -> dict[str, Any] | None:
        state = dashboard_state(port)
        runs = [r for r in (state or {}).get("runs", []) if r["run_id"] == run_id]
        return runs[0] if runs and runs[0]["audit"] else None

    run = wait_for("the dashboard to show the audited run", run_seen, timeout=60)
    assert run["audit"]["exact"] and run["sum"] == run["expected_sum"] == expected_sum
    assert run["by_consumer"] == report["by_consumer"]

    # status, in the dashboard's container.
    shown = stack.compose("exec", "-T", "dashboard", "python", "-m", "observe.status", "--json")
    status = json.loads(shown.stdout)
    assert [r["sum"] for r in status["runs"] if r["run_id"] == run_id] == [expected_sum]

    # Metrics: each replica serves its own on the same port inside its container, unpublished.
    seen: dict[str, float] = {}
    for container in stack.containers("consumer"):
        container.reload()
        assert container.attrs["NetworkSettings"]["Ports"].get("9100/tcp") is None
        exit_code, output = container.exec_run(["python", "-c", SCRAPE])
        assert exit_code == 0, output
        seen.update(committed_by(output.decode()))
    assert seen == {k: float(v) for k, v in report["by_consumer"].items()}
