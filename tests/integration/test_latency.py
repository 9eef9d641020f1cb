"""Push-to-commit latency: the histogram's arithmetic, and the consumer's --stats-file."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from exactsum.transport.latency import LatencyHistogram, bucket_of, bucket_upper_us
from tests.procs import Services, assert_exact, random_sum


def test_buckets_are_within_a_few_percent() -> None:
    for us in (2, 3, 10, 999, 1000, 1001, 123_456, 10**9):
        index = bucket_of(us)
        assert us <= bucket_upper_us(index) <= us * 1.022
        assert bucket_upper_us(index - 1) <= us


def test_percentiles_weigh_each_item() -> None:
    hist = LatencyHistogram()
    for _ in range(98):
        hist.record(1_000, items=1)  # 1 ms
    hist.record(50_000, items=2)  # one batch of two items at 50 ms
    summary = hist.summary()
    assert summary["items"] == 100 and summary["batches"] == 99
    assert 1.0 <= summary["p50_ms"] <= 1.03
    assert 1.0 <= summary["p90_ms"] <= 1.03
    assert 50.0 <= summary["p99_ms"] <= 51.1
    assert summary["max_ms"] == 50.0
    assert summary["mean_ms"] == pytest.approx((98 * 1 + 2 * 50) / 100)


def test_merge_and_clock_skew() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    a.record(100, items=3)
    b.record(-5, items=1)  # stamped in the future: counted as 0, and reported
    merged = LatencyHistogram.merged([a, b])
    assert merged.items == 4 and merged.batches == 2
    assert merged.summary()["clock_skew_batches"] == 1
    assert LatencyHistogram().summary()["p99_ms"] is None
    again = LatencyHistogram.from_summary(merged.summary())
    assert again.summary() == merged.summary()


@pytest.mark.timeout(60)
def test_consumer_writes_its_stats_file_at_exit(services: Services, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    consumer = services.consumer("--threads", "2", "--stats-file", str(stats))
    services.consumer_id(consumer)
    producer = services.producer("--count", "3000", "--batch", "10", "--seed", "1")
    assert producer.wait(timeout=30) == 0
    assert_exact(producer.report(), 3000, random_sum(3000, 1))
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(timeout=15) == 0
    record = json.loads(stats.read_text())
    assert record["committed_items"] == 3000
    latency = record["latency"]
    assert latency["items"] == 3000 and latency["batches"] == 300
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"] < 30_000


@pytest.mark.timeout(60)
def test_a_paced_run_keeps_its_rate_with_one_item_per_batch(
    services: Services, tmp_path: Path
) -> None:
    """--rate with --batch 1 pushes several due batches per call when it falls behind."""
    stats = tmp_path / "stats.json"
    consumer = services.consumer("--threads", "2", "--stats-file", str(stats))
    services.consumer_id(consumer)
    producer = services.producer("--count", "6000", "--seed", "2", "--batch", "1",
                                 "--rate", "4000", "--threads", "1")
    assert producer.wait(timeout=30) == 0
    report = producer.report()
    assert_exact(report, 6000, random_sum(6000, 2))
    assert 1.4 <= report["elapsed_s"] <= 5.0, report  # 1.5 s at the rate, plus the last commit
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(timeout=15) == 0
    assert json.loads(stats.read_text())["latency"]["items"] == 6000
