"""End to end with real processes: one producer, several consumers, faults by real signals.

Every run sums a file whose sum the test computed itself, so the report is checked against an
independent figure, and every fault test also checks that the fault landed (claims were
reclaimed, commits were fenced), so that it cannot pass by missing its moment.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from exactsum.counters import Event
from exactsum.keys import Keys
from tests.faulting import QUICK_LIVENESS, inflight_of, reclaimed, start_mid_run, wait_refused
from tests.localredis import LocalRedis
from tests.procs import Services, assert_exact, committed, finish, numbers_file, wait_until

ITEMS = 200_000


@pytest.mark.timeout(120)
def test_three_consumers_sum_exactly(services: Services, tmp_path: Path) -> None:
    path, total = numbers_file(tmp_path, ITEMS)
    consumers = [services.consumer("--threads", "4") for _ in range(3)]
    report = finish(services.producer("--input", str(path), "--batch", "100"))
    assert_exact(report, ITEMS, total)
    ids = {services.consumer_id(c) for c in consumers}
    assert set(report["by_consumer"]) == ids  # type: ignore[arg-type]


@pytest.mark.timeout(120)
def test_batch_of_one(services: Services, tmp_path: Path) -> None:
    path, total = numbers_file(tmp_path, 5_000)
    for _ in range(2):
        services.consumer("--threads", "4")
    report = finish(services.producer("--input", str(path), "--batch", "1"))
    assert_exact(report, 5_000, total)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_a_consumer_mid_run_and_start_another(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    slow = ("--threads", "4", "--work-io-ms", "0.15")  # defaults for liveness: 5 s TTL
    run = start_mid_run(services, client, keys, tmp_path, items=ITEMS, consumer_args=slow)
    held = run.wait_target_holding("the victim holding claims")
    run.target.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    services.consumer(*slow, name="replacement")
    # Its claims go back to the queue within 10 s with the default heartbeat settings.
    wait_until(lambda: run.target_holds() == 0, 12, "the reclaim")
    assert time.monotonic() - killed_at <= 10.5
    run.finish_exact()
    assert reclaimed(client, keys) >= held > 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigstop_past_the_heartbeat_then_sigcont_counts_nothing_twice(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    slow = ("--threads", "4", "--work-io-ms", "0.15", *QUICK_LIVENESS)
    run = start_mid_run(services, client, keys, tmp_path, items=ITEMS, consumer_args=slow)
    run.wait_target_holding("the sleeper's claims")
    run.target.signal(signal.SIGSTOP)
    wait_until(lambda: reclaimed(client, keys) > 0, 15, "the sleeper's claims reclaimed")
    time.sleep(1.0)
    run.target.signal(signal.SIGCONT)  # it wakes up holding batches that others now hold
    run.finish_exact()
    wait_refused(run.target)
    assert run.target.popen.poll() is None  # and it keeps serving


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigterm_a_consumer_mid_run_exits_0_within_its_grace(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    grace = 3.0
    slow = ("--threads", "4", "--work-io-ms", "0.15", "--grace", str(grace), *QUICK_LIVENESS)
    run = start_mid_run(services, client, keys, tmp_path, items=ITEMS, consumer_args=slow)
    run.wait_target_holding("the leaver's claims")
    run.target.signal(signal.SIGTERM)
    started = time.monotonic()
    assert run.target.wait(timeout=grace + 5) == 0
    assert time.monotonic() - started <= grace + 0.5
    assert run.target_holds() == 0
    assert not client.exists(keys.heartbeat(run.target_id))
    run.finish_exact()


@pytest.mark.timeout(180)
def test_sigterm_with_batches_longer_than_the_grace_gives_them_back(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """Work that cannot finish within the grace is put back on the queue, not lost."""
    path, total = numbers_file(tmp_path, 2_000)
    # 100 items x 20 ms = 2 s per batch, against a 1 s grace.
    leaver = services.consumer("--threads", "2", "--work-io-ms", "20", "--grace", "1",
                               *QUICK_LIVENESS)
    leaver_id = services.consumer_id(leaver)
    producer = services.producer("--input", str(path), "--batch", "100")
    wait_until(lambda: inflight_of(client, keys, leaver_id) == 2, 20, "both threads busy")
    leaver.signal(signal.SIGTERM)
    assert leaver.wait(timeout=5) == 0
    assert leaver.counter(Event.GRACE_OVERRUN) >= 1, leaver.counters()
    assert leaver.counter(Event.ELEMENTS_GIVEN_BACK) == 2, leaver.counters()
    assert inflight_of(client, keys, leaver_id) == 0
    assert reclaimed(client, keys) == 2
    services.consumer("--threads", "4", *QUICK_LIVENESS)
    report = finish(producer)
    assert_exact(report, 2_000, total)


@pytest.mark.parametrize("attempt", range(3))
def test_a_thread_blocked_in_its_claim_at_the_give_back_leaves_no_claim_behind(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path, attempt: int
) -> None:
    """Two threads hold batches that outlast the grace; the third is blocked in BLMOVE (2 s)
    when they are given back, so it receives one of them after the give-back. The stop waits
    for that claim to end and gives back again: the consumer leaves no claim behind."""
    path, total = numbers_file(tmp_path, 200)
    leaver = services.consumer("--threads", "3", "--work-io-ms", "20", "--grace", "1",
                               "--block-timeout", "2", "--heartbeat-ttl", "4",
                               "--reclaim-interval", "0.5")
    leaver_id = services.consumer_id(leaver)
    producer = services.producer("--input", str(path), "--batch", "100")
    wait_until(lambda: inflight_of(client, keys, leaver_id) == 2, 20, "two threads busy")
    leaver.signal(signal.SIGTERM)
    assert leaver.wait(timeout=8) == 0
    assert inflight_of(client, keys, leaver_id) == 0, leaver.stderr
    services.consumer("--threads", "2", *QUICK_LIVENESS)
    report = finish(producer)
    assert_exact(report, 200, total)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_redis_killed_and_restarted_mid_run(
    own_redis: LocalRedis, own_services: Services, tmp_path: Path
) -> None:
    services = own_services
    client, keys = own_redis.client(), services.keys
    path, total = numbers_file(tmp_path, ITEMS)
    slow = ("--threads", "4", "--work-io-ms", "0.1", *QUICK_LIVENESS)
    consumers = [services.consumer(*slow) for _ in range(3)]
    # A small queue bound keeps the producer pushing while Redis dies.
    producer = services.producer("--input", str(path), "--batch", "100", "--max-queue", "5000")
    wait_until(lambda: committed(client, keys) >= ITEMS // 4, 60, "a quarter committed")
    own_redis.kill()
    time.sleep(1.5)
    own_redis.start()
    report = finish(producer, timeout=150)
    assert_exact(report, ITEMS, total)
    for consumer in consumers:
        assert consumer.popen.poll() is None
        # Each attempt counted (and logged) while Redis was down.
        assert consumer.counter(Event.REDIS_RETRY) >= 1, consumer.counters()
    assert producer.counter(Event.REDIS_RETRY) >= 1, producer.counters()
    assert report["counters"][Event.REDIS_RETRY] >= 1, report  # the report carries them too


@pytest.mark.timeout(120)
def test_foreign_elements_are_dead_lettered_and_the_consumer_keeps_going(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    strangers = [b"hello", b"", b"\x00\xff" * 10, b"pc1|x|0|1|5|notanumber", b"9" * 100_000,
                 b"pc1|norun|0|1|1|5"]
    for element in strangers:
        client.lpush(keys.queue, element)
    consumer = services.consumer("--threads", "2")
    wait_until(lambda: client.llen(keys.dead) == len(strangers), 20, "dead letters")
    entries = [__import__("json").loads(e) for e in client.lrange(keys.dead, 0, -1)]
    decoded = sorted(__import__("base64").b64decode(e["element_b64"]) for e in entries)
    assert decoded == sorted(strangers)  # nothing lost, byte for byte
    assert all(e["reason"] for e in entries)
    assert any("unknown or expired" in e["reason"] for e in entries)
    path, total = numbers_file(tmp_path, 10_000)
    report = finish(services.producer("--input", str(path)))
    assert_exact(report, 10_000, total)
    assert consumer.popen.poll() is None


@pytest.mark.timeout(120)
def test_max_queue_holds_the_producer_back(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path, total = numbers_file(tmp_path, 50_000)
    producer = services.producer("--input", str(path), "--batch", "100", "--max-queue", "2000")
    deepest = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        deepest = max(deepest, int(client.llen(keys.queue)))
        time.sleep(0.01)
    assert deepest == 20  # 2,000 items in elements of 100: full, and never more
    assert producer.popen.poll() is None  # waiting, not failing
    services.consumer("--threads", "2")
    report = finish(producer)
    assert_exact(report, 50_000, total)


@pytest.mark.timeout(120)
def test_two_runs_at_once_keep_their_own_sums(services: Services, tmp_path: Path) -> None:
    first, first_total = numbers_file(tmp_path, 30_000, seed=1)
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second, second_total = numbers_file(second_dir, 20_000, seed=2)
    for _ in range(2):
        services.consumer("--threads", "4")
    a = services.producer("--input", str(first), "--batch", "10", name="producer-a")
    b = services.producer("--input", str(second), "--batch", "10", name="producer-b")
    report_a, report_b = finish(a), finish(b)
    assert_exact(report_a, 30_000, first_total)
    assert_exact(report_b, 20_000, second_total)
    assert report_a["run_id"] != report_b["run_id"]


@pytest.mark.timeout(60)
def test_timeout_without_consumers_reports_unverified(services: Services) -> None:
    producer = services.producer("--count", "1000", "--timeout", "2")
    assert producer.wait(timeout=30) == 1
    report = producer.report()
    assert report["timed_out"] is True and report["exact"] is False
    # Pushed and waiting on the queue: pending (consumers would still count them), not lost.
    assert report["pending"] == 1000 and report["lost"] == 0 and report["committed"] == 0


@pytest.mark.timeout(60)
def test_finished_runs_expire_after_their_retention(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path, total = numbers_file(tmp_path, 5_000)
    services.consumer("--reclaim-interval", "0.2")
    report = finish(services.producer("--input", str(path), "--retention", "2"))
    assert_exact(report, 5_000, total)
    run_keys = f"{keys.prefix}:run:{report['run_id']}:*"
    assert list(client.scan_iter(match=run_keys))
    wait_until(lambda: not list(client.scan_iter(match=run_keys)), 15, "the run's keys to expire")
    wait_until(lambda: client.zcard(keys.runs) == 0, 10, "the run to leave pc:runs")
