"""The compose stack on a real Docker engine: a plain run, and runs with a fault in the middle.

Fault runs slow the consumers down (CONSUMER_WORK_IO_MS, small batches) so that the fault lands
while batches are claimed and in flight, and each test checks, from Redis or from the producer's
JSON report, that the fault really did land mid-run before it checks that the sum is exact.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from tests.procs import assert_exact, random_sum

from .stack import Stack, wait_for

pytestmark = pytest.mark.e2e

# Every run's random numbers come from this seed, so that each test knows its sum (random_sum).
SEED = 5
# 0.4 s of work per batch of 100, 4 threads per consumer: a run of N batches over C consumers
# takes about N * 0.4 / (4 * C) seconds.
SLOW = {
    "PRODUCER_BATCH": "100",
    "CONSUMER_WORK_IO_MS": "4",
    "PRODUCER_JSON": "1",
    "PRODUCER_TIMEOUT": "240",
    "CONSUMER_HEARTBEAT_TTL": "3",
    "PRODUCER_SEED": str(SEED),
}


def _start_run(stack: Stack, run_id: str) -> Any:
    """Redis, the consumers, then the producer (compose starts it once they are healthy): a run
    of ``PRODUCER_COUNT`` numbers drawn with ``SEED``."""
    stack.up()
    producer = stack.container("producer")
    stack.wait_committed(run_id, 1)
    return producer


def _finish(stack: Stack, producer: Any, count: int, timeout: float = 180) -> dict[str, Any]:
    status = stack.wait_exit(producer, timeout)
    report = Stack.report(producer)
    assert status == 0, report
    assert_exact(report, count, random_sum(count, SEED))
    return report


@pytest.mark.timeout(300)
@pytest.mark.parametrize("consumers", [3, 5])
def test_up_spreads_a_default_run_over_every_consumer(make_stack: Any, consumers: int) -> None:
    """`docker compose up --exit-code-from producer` with the default run (100,000 numbers in
    1..11, seeded here so that the test knows their sum): the producer's verdict is compose's
    exit code, and every consumer took a share."""
    stack = make_stack({"PRODUCER_JSON": "1", "PRODUCER_SEED": str(SEED)})
    result = stack.compose("up", "--no-build", "--exit-code-from", "producer",
                           "--scale", f"consumer={consumers}", timeout=240)
    assert result.returncode == 0
    report = Stack.report(stack.container("producer"))
    assert_exact(report, 100_000, random_sum(100_000, SEED))
    assert len(report["by_consumer"]) == consumers, report["by_consumer"]
    assert all(items > 0 for items in report["by_consumer"].values()), report["by_consumer"]
    # compose stopped the consumers when the producer exited: each stopped cleanly.
    consumers_seen = stack.containers("consumer")
    assert len(consumers_seen) == consumers
    for container in consumers_seen:
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, container.name


@pytest.mark.timeout(300)
def test_runs_against_consumers_that_are_up(make_stack: Any) -> None:
    """`docker compose run --rm producer ...` against running consumers, once with random numbers
    and once summing a file on stdin (`run -T ... --input -`)."""
    stack = make_stack({})
    stack.up("consumer")
    wait_for("three healthy consumers", lambda: stack.healthy("consumer", 3), timeout=60)

    result = stack.compose("run", "--rm", "producer", "--count", "20000", "--seed", "7",
                           "--json")
    report = Stack.report_from_text(result.stdout)
    assert_exact(report, 20_000, random_sum(20_000, 7))
    assert len(report["by_consumer"]) >= 1

    rng = random.Random(3)
    numbers = [rng.randint(-(2**40), 2**40) for _ in range(5_000)]
    text = "".join(f"{n}\n" for n in numbers)
    result = stack.compose("run", "--rm", "-T", "producer", "--input", "-", "--json",
                           input=text)
    report = Stack.report_from_text(result.stdout)
    assert_exact(report, len(numbers), sum(numbers))
    # Both runs left the consumers serving.
    assert all(c.status == "running" for c in stack.containers("consumer"))


@pytest.mark.timeout(300)
def test_sigkill_of_a_consumer_mid_run_is_exact(make_stack: Any) -> None:
    count, run_id = 30_000, "e2e-sigkill"
    stack = make_stack({**SLOW, "PRODUCER_COUNT": str(count), "PRODUCER_RUN_ID": run_id})
    producer = _start_run(stack, run_id)
    stack.wait_committed(run_id, count // 10)
    victim = stack.containers("consumer")[0]
    victim.kill(signal="SIGKILL")
    assert stack.committed(run_id) < count, "the run finished before the fault"

    report = _finish(stack, producer, count)
    # The victim's claims went back to the queue after its heartbeat lapsed.
    assert stack.reclaimed() > 0
    assert len(report["by_consumer"]) >= 3, report["by_consumer"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("grace", "io_ms", "count", "given_back"),
    [
        pytest.param(8, "4", 30_000, False, id="batches-finish-within-grace"),
        # 4 s of work per batch against a 2 s grace: the consumers give their batches back.
        pytest.param(2, "40", 3_600, True, id="batches-given-back"),
    ],
)
def test_compose_stop_of_the_consumers_mid_run(make_stack: Any, grace: int, io_ms: str,
                                               count: int, given_back: bool) -> None:
    """`docker compose stop consumer` mid-run: every consumer exits 0 within its grace, nothing
    is lost (each item is committed or back on the queue), and a later `up` finishes the run."""
    run_id = f"e2e-stop-{grace}"
    stack = make_stack({**SLOW, "PRODUCER_COUNT": str(count), "PRODUCER_RUN_ID": run_id,
                        "CONSUMER_WORK_IO_MS": io_ms, "CONSUMER_GRACE": str(grace),
                        "CONSUMER_STOP_GRACE_PERIOD": f"{grace + 10}s"})
    producer = _start_run(stack, run_id)
    stack.wait_committed(run_id, count // 6)

    started = time.monotonic()
    stack.compose("stop", "consumer")
    took = time.monotonic() - started
    consumers = stack.containers("consumer")
    assert len(consumers) == 3
    for container in consumers:
        container.reload()
        state = container.attrs["State"]
        assert state["Status"] == "exited", container.name
        assert state["ExitCode"] == 0, (container.name, state)
        assert not state["OOMKilled"], container.name
    # compose waits for all three together; SIGKILL would only come after grace + 10 s.
    assert took < grace + 4, f"stopping took {took:.1f}s with a grace of {grace}s"

    state = stack.run_state(run_id)
    assert state.expected_sum is not None, "the producer had not pushed the whole run yet"
    assert state.inflight_keys == [], "claims left behind by a clean stop"
    assert state.heartbeats == [], "heartbeats left behind by a clean stop"
    assert state.dead_items == 0
    assert 0 < state.committed < count, "the stop did not land mid-run"
    assert state.committed + state.queued_items == count, state
    assert state.expected_sum == random_sum(count, SEED), state
    assert state.sum + state.queued_sum == state.expected_sum, state
    # Batches given back on stop are counted with those reclaimed from dead consumers.
    if given_back:
        assert stack.reclaimed() > 0, "no batch was given back: the grace was long enough"
    else:
        assert stack.reclaimed() == 0, "batches were given back within a long grace"
    producer.reload()
    assert producer.status == "running", "the producer gave up while the consumers were away"

    stack.up("consumer", no_deps=True)
    _finish(stack, producer, count)


@pytest.mark.timeout(300)
def test_scaling_from_one_to_four_consumers_mid_run(make_stack: Any) -> None:
    count, run_id = 20_000, "e2e-scale"
    stack = make_stack({**SLOW, "PRODUCER_COUNT": str(count), "PRODUCER_RUN_ID": run_id,
                        "CONSUMER_REPLICAS": "1"})
    producer = _start_run(stack, run_id)
    first = stack.container("consumer")
    stack.wait_committed(run_id, count // 10)

    stack.up("consumer", scale={"consumer": 4}, no_deps=True)
    consumers = stack.containers("consumer")
    assert len(consumers) == 4
    assert first.id in {c.id for c in consumers}, "scaling up recreated the running consumer"
    assert stack.committed(run_id) < count // 2, "the run was nearly over before the new replicas"

    report = _finish(stack, producer, count)
    assert len(report["by_consumer"]) == 4, report["by_consumer"]
    assert all(items > 0 for items in report["by_consumer"].values()), report["by_consumer"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["restart", "kill"])
def test_redis_going_away_mid_run_is_exact(make_stack: Any, how: str) -> None:
    """Redis restarted (SIGTERM, start) or killed (SIGKILL, start) mid-run: with appendfsync
    always, every acknowledged write survives, and the services reconnect and finish."""
    count, run_id = 30_000, f"e2e-redis-{how}"
    stack = make_stack({**SLOW, "PRODUCER_COUNT": str(count), "PRODUCER_RUN_ID": run_id})
    producer = _start_run(stack, run_id)
    stack.wait_committed(run_id, count // 10)

    redis = stack.container("redis")
    started_at = redis.attrs["State"]["StartedAt"]
    if how == "restart":
        redis.restart(timeout=10)
    else:
        redis.kill(signal="SIGKILL")
        redis.start()
    redis.reload()
    assert redis.attrs["State"]["StartedAt"] != started_at
    wait_for("Redis answering again", lambda: stack.redis("PING", check=False) == ["PONG"],
             timeout=60)
    assert stack.committed(run_id) < count, "the run finished before the fault"

    _finish(stack, producer, count)
