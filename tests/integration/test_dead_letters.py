"""Poison items, retries, dead letters and the admin command; foreign elements thrown at the
consumer side by hypothesis."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exactsum.counters import Event
from exactsum.keys import Keys
from exactsum.protocol import encode
from exactsum.runs import RunPlan, create_run
from exactsum.scripts import Scripts
from exactsum.transport.failures import FailureInjector
from exactsum.transport.native.worker import Worker
from tests.procs import Services, assert_exact, finish, numbers_file, wait_until


def admin(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exactsum_admin", *args], capture_output=True,
                          text=True, timeout=60, env=services.env())


def dead_entries(client: redis.Redis, keys: Keys, run_id: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in client.lrange(keys.run(run_id).dead, 0, -1)]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_poison_items_end_in_dead_letters_after_max_attempts(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path, total = numbers_file(tmp_path, 20_000)
    for _ in range(2):
        services.consumer("--threads", "4", "--fail-rate", "0.002", "--max-attempts", "3")
    producer = services.producer("--input", str(path), "--batch", "20")
    assert producer.wait(timeout=90) == 3, producer.stderr[-2000:]
    report = producer.report()
    entries = dead_entries(client, keys, report["run_id"])
    assert entries, "a 0.2% poison rate over 20,000 items must poison some batches"
    dead_items = sum(e["items"] for e in entries)
    assert report["dead_lettered"] == dead_items
    assert (report["lost"], report["duplicated"]) == (0, 0)
    assert report["committed"] + dead_items == 20_000
    assert report["sum"] + report["dead_sum"] == total
    assert report["accounted"] is True and report["exact"] is False
    for entry in entries:
        assert entry["attempts"] == 3
        assert "is poison" in entry["reason"] and "after 3 attempts" in entry["reason"]

    # An operator requeues them to consumers that no longer fail them: the run becomes exact.
    listed = admin(services, "dead", "list", "--run", report["run_id"])
    assert f"{len(entries)} dead letters" in listed.stdout
    services.consumer("--threads", "2", name="healthy")
    for proc in services.procs[:2]:
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    requeued = admin(services, "dead", "requeue", "--run", report["run_id"], "--all")
    assert requeued.returncode == 0
    assert f"requeue: {len(entries)} of {len(entries)}" in requeued.stdout
    audit_cmd = ["audit", "--run", report["run_id"], "--json"]

    def audited() -> dict[str, Any]:
        return dict(json.loads(admin(services, *audit_cmd).stdout))

    wait_until(lambda: audited()["exact"], 30, "the requeued batches counted")
    final = audited()
    assert (final["committed"], final["sum"], final["dead_lettered"]) == (20_000, total, 0)
    assert admin(services, *audit_cmd).returncode == 0


@pytest.mark.timeout(120)
def test_flaky_failures_are_retried_until_they_count(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path, total = numbers_file(tmp_path, 10_000)
    consumers = [services.consumer("--threads", "4", "--flaky-rate", "0.3", "--max-attempts",
                                   "20") for _ in range(2)]
    report = finish(services.producer("--input", str(path), "--batch", "50"))
    assert_exact(report, 10_000, total)
    # 30% of 200 batches fail at least once. The consumers live on: their counters file is
    # rewritten a moment after a change, so the last retries of a quick run may not be in it yet.
    wait_until(lambda: sum(c.counter(Event.BATCH_RETRIED) for c in consumers) > 10, 10,
               "the consumers' retries in their counters files")


@pytest.mark.timeout(60)
def test_drop_keeps_the_items_accounted(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path, total = numbers_file(tmp_path, 1_000)
    services.consumer("--threads", "2", "--fail-rate", "0.01", "--max-attempts", "1")
    producer = services.producer("--input", str(path), "--batch", "10")
    assert producer.wait(timeout=60) == 3
    run_id = producer.report()["run_id"]
    dead = dead_entries(client, keys, run_id)
    assert admin(services, "dead", "drop", "--run", run_id, "--index", "0").returncode == 0
    assert client.llen(keys.run(run_id).dead) == len(dead) - 1
    result = json.loads(admin(services, "audit", "--run", run_id, "--json").stdout)
    assert result["dropped"] == dead[0]["items"]
    assert result["accounted"] is True and result["lost"] == 0
    assert result["sum"] + result["dead_sum"] == total
    assert admin(services, "dead", "drop", "--run", run_id, "--index", "999").returncode == 2


def test_retry_script_requeues_then_reports_exhaustion(
    client: redis.Redis, keys: Keys, scripts: Scripts
) -> None:
    create_run(client, keys, RunPlan("r1", 3, 3), "test")
    element = encode("r1", 0, [1, 2, 3])
    rk = keys.run("r1")
    inflight = keys.inflight("c", 0)
    retry_keys = [inflight, keys.queue, rk.attempts, rk.done]
    for attempt in (1, 2):
        client.lpush(keys.queue, element)
        client.lmove(keys.queue, inflight, "RIGHT", "LEFT")
        reply = scripts.retry(keys=retry_keys, args=[element, 0, 3])
        assert list(map(int, reply)) == [1, attempt, 0]
        assert client.lrange(keys.queue, 0, -1) == [element]
        client.delete(keys.queue)
    client.lpush(inflight, element)
    assert list(map(int, scripts.retry(keys=retry_keys, args=[element, 0, 3]))) == [2, 3, 1]
    assert client.llen(keys.queue) == 0 and client.llen(inflight) == 1  # kept for dead letters
    client.delete(inflight)
    assert list(map(int, scripts.retry(keys=retry_keys, args=[element, 0, 3]))) == [-1, 0, 0]


class _Harness:
    """A worker that is never started: the test hands it elements as the claim loop would."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client, self.keys = client, keys
        never = threading.Event()
        self.worker = Worker(client, keys, Scripts.register(client), "hyp", 0, block_timeout=0.1,
                             stop_claiming=never, halt=never, failures=FailureInjector())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(element=st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=200).map(str.encode),
    st.builds(lambda n: b"7" * n, st.integers(0, 300_000)),
    st.from_regex(rb"\Apc1\|[a-z0-9|,:-]{0,40}\Z"),
))
def test_foreign_elements_never_crash_a_consumer_and_are_kept_byte_for_byte(
    client: redis.Redis, keys: Keys, element: bytes
) -> None:
    harness = _Harness(client, keys)
    client.delete(keys.dead, keys.queue)
    client.lpush(keys.queue, element)
    claimed = client.lmove(keys.queue, harness.worker.inflight, "RIGHT", "LEFT")
    assert claimed == element
    harness.worker.handle(element)
    assert client.llen(harness.worker.inflight) == 0
    entries = client.lrange(keys.dead, 0, -1)
    assert len(entries) == 1
    entry = json.loads(entries[0])
    assert base64.b64decode(entry["element_b64"]) == element
    assert entry["reason"]
    assert list(client.scan_iter(match=f"{keys.prefix}:run:*")) == []  # no run was touched
