"""Prometheus metrics, scraped from real services during a run, agree with the audit at the end;
and every JSON log line names its run and consumer."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import cast

import pytest
import redis
from prometheus_client import CollectorRegistry, Counter

from exactsum.keys import Keys
from exactsum.logs import ContextFilter, JsonFormatter, bind_run, set_context
from exactsum.metrics import RunSeries
from exactsum.protocol import element_items, encode
from tests.localredis import free_port
from tests.observing import scrape, total
from tests.procs import Services, committed, numbers_file, wait_until

ITEMS, BATCH = 30_000, 20
QUICK_LIVENESS = ("--heartbeat-ttl", "2", "--block-timeout", "0.5", "--reclaim-interval", "0.5")


def metrics_args(port: int) -> tuple[str, ...]:
    return ("--metrics-port", str(port), "--metrics-addr", "127.0.0.1")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_metrics_scraped_during_a_run_agree_with_the_audit(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path, expected = numbers_file(tmp_path, ITEMS)
    work = ("--threads", "2", *QUICK_LIVENESS, "--work-io-ms", "0.5")
    ports = [free_port(), free_port()]
    survivors = [
        services.consumer(*work, "--flaky-rate", "0.03", "--fail-rate", "0.0005",
                          *metrics_args(port), LOG_FORMAT="json")
        for port in ports
    ]
    victim = services.consumer(*work)  # no failures of its own, so every retry is a survivor's
    victim_id = services.consumer_id(victim)
    ids = [services.consumer_id(c) for c in survivors]
    producer_port = free_port()
    producer = services.producer("--input", str(path), "--batch", str(BATCH),
                                 *metrics_args(producer_port), LOG_FORMAT="json")

    # The producer pushes everything at once, then waits: its counters are final from then on.
    wait_until(lambda: client.exists(keys.runs) and client.zcard(keys.runs) == 1, 20, "the run")
    run_id = cast(list[bytes], client.zrange(keys.runs, 0, 0))[0].decode()
    wait_until(lambda: client.hget(keys.run(run_id).meta, "state") != b"pushing", 20, "pushed")
    produced = scrape(producer_port)
    assert total(produced, "exactsum_items_produced_total", run=run_id) == ITEMS
    assert total(produced, "exactsum_batches_produced_total", run=run_id) == ITEMS // BATCH
    assert total(produced, "exactsum_redis_up") == 1

    # During the run: counters only grow and never pass what Redis holds.
    first = [scrape(port) for port in ports]
    done_after = committed(client, keys)
    assert sum(total(s, "exactsum_items_committed_total") for s in first) <= done_after
    assert all(total(s, "exactsum_redis_up") == 1 for s in first)
    assert all(("exactsum_inflight_items", frozenset({("consumer", i)})) in s
               for s, i in zip(first, ids, strict=True))
    wait_until(lambda: committed(client, keys) >= ITEMS // 5, 60, "a fifth committed")
    wait_until(lambda: any(client.llen(keys.inflight(victim_id, n)) for n in range(2)), 10,
               "the victim holding claims")
    victim.signal(signal.SIGKILL)
    second = [scrape(port) for port in ports]
    for before, after in zip(first, second, strict=True):
        assert (total(after, "exactsum_items_committed_total")
                >= total(before, "exactsum_items_committed_total"))
    assert sum(total(s, "exactsum_items_committed_total") for s in second) > 0

    assert producer.wait(timeout=90) == 3, producer.stderr[-3000:]  # some poison dead-lettered
    report = producer.report()
    assert (report["lost"], report["duplicated"]) == (0, 0), report
    assert report["sum"] + report["dead_sum"] == expected
    wait_until(lambda: int(client.get(keys.reclaimed) or 0) > 0, 10, "the victim's reclaim")

    final = [scrape(port) for port in ports]
    rk = keys.run(run_id)
    for consumer_id, samples in zip(ids, final, strict=True):
        mine = report["by_consumer"][consumer_id]
        assert total(samples, "exactsum_items_committed_total", run=run_id,
                     consumer=consumer_id) == mine
        assert total(samples, "exactsum_claim_to_commit_seconds_count") == mine // BATCH
        assert total(samples, "exactsum_push_to_commit_seconds_count") == mine // BATCH
        assert total(samples, "exactsum_inflight_items") == 0
        assert total(samples, "exactsum_queue_depth_batches") == 0
    assert sum(total(s, "exactsum_items_dead_lettered_total", run=run_id) for s in final) == (
        report["dead_lettered"]) > 0
    assert sum(total(s, "exactsum_batches_reclaimed_total") for s in final) == int(
        client.get(keys.reclaimed) or 0)
    assert sum(total(s, "exactsum_commits_refused_total") for s in final) == (
        report["stale_commits"])
    # Every failed attempt is a retry, except the last attempt of a dead-lettered batch.
    attempts = sum(int(v) for v in cast(dict[bytes, bytes], client.hgetall(rk.attempts)).values())
    assert sum(total(s, "exactsum_batches_retried_total") for s in final) == (
        attempts - report["dead_lettered"] // BATCH) > 0

    # Every JSON log line names the consumer; a worker's line about a batch names its run.
    for proc, consumer_id in zip(survivors, ids, strict=True):
        lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
        assert lines and all(line["consumer"] == consumer_id for line in lines)
        retries = [line for line in lines if "failed (attempt" in line["msg"]]
        assert retries and all(line["run"] == run_id and line["thread"].startswith("worker-")
                               for line in retries)
    lines = [json.loads(line) for line in producer.stderr.splitlines() if line.strip()]
    assert lines and all(line["run"] == run_id for line in lines)


def test_a_busy_port_ends_a_service_with_exit_2(services: Services) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        consumer = services.consumer(*metrics_args(port))
        assert consumer.wait(timeout=20) == 2
        assert "cannot serve metrics" in consumer.stderr


def test_only_the_latest_runs_keep_their_series() -> None:
    registry = CollectorRegistry()
    items = Counter("items", "test", ["run", "consumer"], registry=registry)
    series = RunSeries(2, [items], "c1")
    for run in ("a", "b", "a", "c"):
        series.children(run)[0].inc()
    runs = {s.labels["run"] for m in registry.collect() for s in m.samples
            if s.name == "items_total"}
    assert runs == {"a", "c"}  # b was the least recently active


def test_items_of_an_element_come_from_its_header() -> None:
    assert element_items(encode("r1", 3, [5, 6, 7])) == 3
    assert element_items(b"not ours") == 0


def test_json_lines_carry_run_consumer_and_thread() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(ContextFilter())
    log = logging.getLogger("test.observe.logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    set_context(consumer="c-1")
    try:
        def work() -> None:
            bind_run("run-7")
            log.info("handling")
            bind_run(None)
            log.info("idle")

        worker = threading.Thread(target=work, name="worker-0")
        worker.start()
        worker.join()
        log.info("main")
    finally:
        log.removeHandler(handler)
        set_context(consumer=None, reset=True)
    formatter = JsonFormatter("consumer", "c-1")
    lines = [json.loads(formatter.format(r)) for r in records]
    assert [(x["run"], x["consumer"], x["thread"]) for x in lines] == [
        ("run-7", "c-1", "worker-0"), (None, "c-1", "worker-0"), (None, "c-1", "MainThread")]
