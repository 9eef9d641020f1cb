"""Prometheus metrics of the producer and the consumer, served over HTTP on ``--metrics-port``.

Both classes are observers (:mod:`exactsum.events`): the services tell them what happened once
per batch, and they count it. Queue depth and in-flight items are not counted but read from
Redis when Prometheus scrapes, so they are Redis' own figures at that moment. Every metric has
its own registry per process (with the process collector), so several can live in one test.

Label sets stay bounded: a consumer labels its series with its own id (one value per process,
because Prometheus' ``instance`` label names a container address, not a consumer), run labels
appear only on the item counters, and only the last ``keep_runs`` runs that a process saw keep
their series; an older run's series are dropped (Prometheus keeps what it scraped).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import suppress
from typing import Any, cast

import redis
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exactsum.cluster import connect, is_cluster
from exactsum.connection import RedisTarget
from exactsum.counters import COUNTERS, Counters
from exactsum.events import ConsumerEvents, ProducerEvents
from exactsum.keys import Keys
from exactsum.protocol import Batch, element_items

log = logging.getLogger("metrics")

NAMESPACE = "exactsum"
# From a batch committed in half a millisecond to one that waited minutes in a long queue.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
KEEP_RUNS = 20


class RunSeries:
    """The series of each run for some counters, kept for the ``keep`` most recently active
    runs: an older run's series are dropped. The children are cached, so that counting a batch
    costs no label lookup."""

    def __init__(self, keep: int, metrics: Iterable[Counter], *fixed: str) -> None:
        self.keep = keep
        self.metrics = list(metrics)
        self.fixed = fixed
        self._runs: OrderedDict[str, tuple[Counter, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def children(self, run_id: str) -> tuple[Counter, ...]:
        """The run's child of each counter, in the order given, made at zero if new."""
        with self._lock:
            kids = self._runs.get(run_id)
            if kids is not None:
                self._runs.move_to_end(run_id)
                return kids
            kids = tuple(metric.labels(run_id, *self.fixed) for metric in self.metrics)
            self._runs[run_id] = kids
            while len(self._runs) > self.keep:
                old, _ = self._runs.popitem(last=False)
                for metric in self.metrics:
                    with suppress(KeyError):
                        metric.remove(old, *self.fixed)
            return kids


class RedisGauges(Collector):
    """Gauges read from Redis at scrape time: queue depth, and a consumer's in-flight items."""

    def __init__(self, client: redis.Redis, keys: Keys, consumer_id: str | None = None,
                 threads: int = 0) -> None:
        self.client, self.keys = client, keys
        self.consumer_id, self.threads = consumer_id, threads

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[GaugeMetricFamily]:
        families = [
            GaugeMetricFamily(f"{NAMESPACE}_redis_up",
                              "1 if this scrape could read Redis, else 0"),
            GaugeMetricFamily(f"{NAMESPACE}_queue_depth_batches",
                              "Batches (queue elements) waiting in the queue"),
        ]
        if self.consumer_id is not None:
            families += [
                GaugeMetricFamily(f"{NAMESPACE}_inflight_batches",
                                  "Batches claimed by this consumer and not yet resolved",
                                  labels=["consumer"]),
                GaugeMetricFamily(f"{NAMESPACE}_inflight_items",
                                  "Items in the batches this consumer holds",
                                  labels=["consumer"]),
            ]
        return families

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        try:
            # On a Redis Cluster: the queues and in-flight lists of every partition, added up.
            parts = ([self.keys.partition(t.decode()) for t in
                      cast(set[bytes], self.client.smembers(self.keys.partitions))]
                     if is_cluster(self.client) else [self.keys])
            pipe = self.client.pipeline(transaction=False)
            for part in parts:
                pipe.llen(part.queue)
            if self.consumer_id is not None:
                for part in parts:
                    for index in range(self.threads):
                        pipe.lrange(part.inflight(self.consumer_id, index), 0, -1)
            replies = pipe.execute()
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            log.debug("metrics: cannot read Redis: %s", exc)
            families[0].add_metric([], 0)
            yield families[0]
            return
        families[0].add_metric([], 1)
        families[1].add_metric([], sum(int(depth) for depth in replies[:len(parts)]))
        if self.consumer_id is not None:
            held = [element for lst in replies[len(parts):]
                    for element in cast(list[bytes], lst)]
            families[2].add_metric([self.consumer_id], len(held))
            families[3].add_metric([self.consumer_id], sum(map(element_items, held)))
        yield from families


class EventCounters(Collector):
    """The process' :mod:`exactsum.counters`, as ``exactsum_events_total{event=...}``: the
    same counts a test reads from ``--counters-file``."""

    def __init__(self, counters: Counters = COUNTERS) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(f"{NAMESPACE}_events", "Events of this process by name "
                                     "(docs/counters.md)", labels=["event"])
        for name, value in self.counters.snapshot().items():
            family.add_metric([name], value)
        yield family


class MetricsServerError(Exception):
    """The metrics server cannot listen where it was told to."""


class _Served:
    registry: CollectorRegistry
    _server: Any = None

    def serve(self, addr: str, port: int) -> int:
        """Listen on ``addr:port`` (port 0: any free port); returns the port."""
        try:
            server, _ = start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            raise MetricsServerError(f"cannot serve metrics on {addr}:{port}: "
                                     f"{exc.strerror or exc}") from None
        self._server = server
        bound = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", addr, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class ConsumerMetrics(_Served, ConsumerEvents):
    def __init__(self, consumer_id: str, keys: Keys, redis_url: RedisTarget | str, threads: int,
                 keep_runs: int = KEEP_RUNS) -> None:
        self.consumer_id = consumer_id
        reg = self.registry = CollectorRegistry()
        ProcessCollector(registry=reg)
        by_run = ["run", "consumer"]
        self.committed = Counter("items_committed", "Items counted into their run's sum",
                                 by_run, namespace=NAMESPACE, registry=reg)
        self.dead = Counter("items_dead_lettered", "Items of batches sent to their run's dead "
                            "letters", by_run, namespace=NAMESPACE, registry=reg)
        me = ["consumer"]
        self.foreign = Counter("foreign_elements", "Queue elements of no known run, sent to the "
                               "dead letters", me, namespace=NAMESPACE, registry=reg)
        self.retried = Counter("batches_retried", "Batches whose processing failed and that "
                               "went back to the queue", me, namespace=NAMESPACE, registry=reg)
        self.refused = Counter("commits_refused", "Commits that counted nothing: the batch was "
                               "already counted, or reclaimed from this consumer (fenced)",
                               ["consumer", "reason"], namespace=NAMESPACE, registry=reg)
        self.reclaimed = Counter("batches_reclaimed", "Batches this consumer moved back to the "
                                 "queue from consumers whose heartbeat expired", me,
                                 namespace=NAMESPACE, registry=reg)
        self.claim_to_commit = Histogram(
            "claim_to_commit_seconds", "From taking a batch to its commit being acknowledged",
            me, namespace=NAMESPACE, registry=reg, buckets=LATENCY_BUCKETS)
        self.push_to_commit = Histogram(
            "push_to_commit_seconds", "From the producer making a batch to its commit (wall "
            "clocks of two hosts)", me, namespace=NAMESPACE, registry=reg,
            buckets=LATENCY_BUCKETS)
        # Series without a run label exist from the start, at zero.
        for counter in (self.foreign, self.retried, self.reclaimed):
            counter.labels(consumer_id)
        for reason in ("already_counted", "fenced"):
            self.refused.labels(consumer_id, reason)
        self._claim_hist = self.claim_to_commit.labels(consumer_id)
        self._push_hist = self.push_to_commit.labels(consumer_id)
        self.runs = RunSeries(keep_runs, [self.committed, self.dead], consumer_id)
        client = connect(redis_url, socket_timeout=2.0,
                         name=f"{consumer_id}-metrics")
        reg.register(RedisGauges(client, keys, consumer_id, threads))
        reg.register(EventCounters())

    def on_commit(self, batch: Batch, claim_s: float) -> None:
        self.runs.children(batch.run_id)[0].inc(batch.count)
        self._claim_hist.observe(claim_s)
        self._push_hist.observe(max(0.0, time.time() - batch.pushed_us / 1e6))

    def on_refused(self, batch: Batch, reason: str) -> None:
        self.refused.labels(self.consumer_id, reason).inc()

    def on_retry(self, batch: Batch) -> None:
        self.retried.labels(self.consumer_id).inc()

    def on_dead_letter(self, batch: Batch) -> None:
        self.runs.children(batch.run_id)[1].inc(batch.count)

    def on_foreign(self) -> None:
        self.foreign.labels(self.consumer_id).inc()

    def on_reclaim(self, elements: int) -> None:
        self.reclaimed.labels(self.consumer_id).inc(elements)


class ProducerMetrics(_Served, ProducerEvents):
    def __init__(self, keys: Keys, redis_url: RedisTarget | str,
                 keep_runs: int = KEEP_RUNS) -> None:
        reg = self.registry = CollectorRegistry()
        ProcessCollector(registry=reg)
        self.items = Counter("items_produced", "Items stored on the queue (each pushed once)",
                             ["run"], namespace=NAMESPACE, registry=reg)
        self.batches = Counter("batches_produced", "Batches stored on the queue", ["run"],
                               namespace=NAMESPACE, registry=reg)
        self.waits = Counter("push_waits", "Pushes that found the queue full and waited "
                             "(backpressure)", ["run"], namespace=NAMESPACE, registry=reg)
        self.runs = RunSeries(keep_runs, [self.items, self.batches, self.waits])
        client = connect(redis_url, socket_timeout=2.0, name="producer-metrics")
        reg.register(RedisGauges(client, keys))
        reg.register(EventCounters())

    def start_run(self, run_id: str) -> None:
        """Make the run's series exist at zero before its first push."""
        self.runs.children(run_id)

    def on_push(self, run_id: str, batches: int, items: int) -> None:
        items_child, batches_child, _ = self.runs.children(run_id)
        items_child.inc(items)
        batches_child.inc(batches)

    def on_wait(self, run_id: str) -> None:
        self.runs.children(run_id)[2].inc()
