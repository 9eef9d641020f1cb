"""The Swarm stack (deploy/stack.yml) on a one-node swarm of the local engine, through
scripts/stack.sh, the script behind `make stack-up`, `stack-scale`, `stack-produce`, `stack-down`.

Each run sums 300,000 numbers that the test draws itself (|n| < 2**40) and hands to the producer
on stdin (`--input -`), so the expected sum is the test's own, not the producer's. The consumers
are slowed down (3 ms of simulated I/O per item, batches of 1,000: 3 s per batch) so that a run
lasts long enough, about 75 s over three consumers, for Swarm to scale or restart tasks in the
middle of it (at 1 ms, a 25 s run was over before `docker service scale` 3 -> 6 returned on two
busy cores), and so that every consumer holds claimed batches when it is killed.

The swarm is made here when the engine is in none, and left again at the end; a swarm that
existed stays. The stack has a unique name, and its services, network and volume are removed
whatever happens.
"""

from __future__ import annotations

import random
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import assert_exact

from .stack import ROOT, Stack, wait_for
from .swarm import SwarmStack, one_node_swarm, swarm_state, write_numbers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COUNT = 300_000
SETTINGS = {
    "CONSUMER_WORK_IO_MS": "3",
    "CONSUMER_HEARTBEAT_TTL": "4",
    "CONSUMER_GRACE": "8",
    "CONSUMER_STOP_GRACE_PERIOD": "20s",
    "CONSUMER_REPLICAS": "3",
}
PRODUCER_ARGS = ["--input", "-", "--batch", "1000", "--json", "--timeout", "400",
                 "--progress-interval", "5"]


@pytest.fixture(scope="module")
def swarm_stack(docker_client: Any, images: dict[str, str]) -> Iterator[SwarmStack]:
    state, _ = swarm_state(docker_client)
    if state not in ("inactive", "active"):
        pytest.skip(f"the engine's swarm is {state!r}: neither free nor usable")
    with one_node_swarm(docker_client) as initialised:
        name = f"e2e-swarm-{uuid.uuid4().hex[:6]}"
        stack = SwarmStack(docker_client, name, SETTINGS)
        try:
            stack.script("up", timeout=420)
            yield stack
        finally:
            result = stack.script("down", timeout=420, check=False)
            print(f"stack down ({'swarm made by the test' if initialised else 'swarm kept'}):"
                  f" {result.stderr.strip()}")


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and "swarm_stack" in request.fixturenames:
        print(f"\n===== task logs =====\n{request.getfixturevalue('swarm_stack').logs()}")


class Run:
    """One producer run of numbers drawn here, in the background."""

    def __init__(self, stack: SwarmStack, tmp_path: Path, seed: int) -> None:
        rng = random.Random(seed)
        self.numbers = [rng.randint(-(2**40), 2**40) for _ in range(COUNT)]
        self.run_id = f"swarm-{seed}-{uuid.uuid4().hex[:6]}"
        source, self.out, self.err = (tmp_path / n for n in ("numbers", "stdout", "stderr"))
        write_numbers(source, self.numbers)
        with source.open("rb") as stdin, self.out.open("wb") as out, \
                self.err.open("wb") as err:
            self.process = stack.produce([*PRODUCER_ARGS, "--run-id", self.run_id],
                                         stdin, out, err)

    def finish(self, timeout: float = 420) -> dict[str, Any]:
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        stdout, stderr = self.out.read_text(), self.err.read_text()
        assert status == 0, f"producer exited {status}\n{stdout[-2000:]}\n{stderr[-3000:]}"
        report = Stack.report_from_text(stdout)
        assert_exact(report, COUNT, sum(self.numbers))
        return report


def test_stack_config_is_what_swarm_needs() -> None:
    """`docker stack config` (no swarm needed) accepts the file, and what Swarm would ignore or
    refuse in docker-compose.yml is absent or replaced."""
    result = subprocess.run(["docker", "stack", "config", "-c", "deploy/stack.yml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0 and "unknown command" in result.stderr:
        pytest.skip("this docker CLI has no `stack config`")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for absent in ("build:", "depends_on", "container_name", "restart:", "profiles"):
        assert absent not in text, absent
    for present in ("attachable: true", "endpoint_mode: dnsrr", "stop_grace_period: 20s",
                    "node.labels.exactsum.redis == true", "consumer_service.healthcheck",
                    "--appendfsync"):
        assert present in text, present


@pytest.mark.timeout(600)
def test_a_run_of_300000_is_exact(swarm_stack: SwarmStack, tmp_path: Path) -> None:
    run = Run(swarm_stack, tmp_path, seed=1)
    report = run.finish()
    assert len(report["by_consumer"]) >= 3, report["by_consumer"]
    assert all(items > 0 for items in report["by_consumer"].values()), report["by_consumer"]
    # The dashboard answers on the port published in host mode.
    dashboard = swarm_stack.containers("dashboard")
    assert len(dashboard) == 1
    wait_for("the dashboard healthy",
             lambda: (dashboard[0].reload() or
                      dashboard[0].attrs["State"].get("Health", {}).get("Status") == "healthy"),
             timeout=120)


@pytest.mark.timeout(900)
def test_scaling_3_to_6_to_2_mid_run_is_exact(swarm_stack: SwarmStack, tmp_path: Path) -> None:
    stack = swarm_stack
    stack.script("scale", "3", timeout=300)
    run = Run(stack, tmp_path, seed=2)
    stack.wait_committed(run.run_id, COUNT // 20)

    stack.script("scale", "6", timeout=300)
    assert stack.running_tasks("consumer") == 6
    assert stack.committed(run.run_id) < COUNT * 3 // 4, "the run was nearly over when scaled up"
    wait_for("six heartbeats", lambda: stack.heartbeats() >= 6, timeout=120)

    stack.wait_committed(run.run_id, COUNT * 6 // 10)
    stack.script("scale", "2", timeout=300)
    assert stack.running_tasks("consumer") == 2
    assert stack.committed(run.run_id) < COUNT, "the run was over before scaling down"
    # The four stopped on SIGTERM within their grace: a clean exit, not Swarm's SIGKILL.
    stopped = wait_for("four consumers stopped", lambda: (
        found if len(found := [c for c in stack.containers("consumer", running=False)
                               if c.status == "exited"]) >= 4 else None), timeout=90)
    assert all(c.attrs["State"]["ExitCode"] == 0 for c in stopped), \
        [(c.name, c.attrs["State"]) for c in stopped]

    report = run.finish()
    # The three new consumers took a share too.
    assert len(report["by_consumer"]) >= 6, report["by_consumer"]
    assert all(items > 0 for items in report["by_consumer"].values()), report["by_consumer"]


@pytest.mark.timeout(600)
def test_sigkill_of_a_consumer_task_mid_run_is_exact(swarm_stack: SwarmStack,
                                                     tmp_path: Path) -> None:
    stack = swarm_stack
    stack.script("scale", "3", timeout=300)
    reclaimed_before = stack.reclaimed()
    run = Run(stack, tmp_path, seed=3)
    stack.wait_committed(run.run_id, COUNT // 10)

    victim = stack.containers("consumer")[0]
    victim.kill(signal="SIGKILL")
    assert stack.committed(run.run_id) < COUNT * 3 // 4, "the run was nearly over at the kill"
    # Swarm replaces the task (restart_policy: any).
    wait_for("a replacement consumer task", lambda: stack.running_tasks("consumer") == 3 and
             victim.id not in {c.id for c in stack.containers("consumer")}, timeout=180)

    report = run.finish()
    # The victim held claimed batches: they went back to the queue once its heartbeat lapsed.
    assert stack.reclaimed() > reclaimed_before
    assert len(report["by_consumer"]) >= 4, report["by_consumer"]
