"""One producer run: plan it, push it, wait for the consumers, audit it, report it.

Or resume it: a run id that exists, with the same source, is taken up where its pushed bitmap
says the earlier attempt stopped (:func:`exactsum.runs.open_run`), under a new epoch that
fences the earlier producer if it still runs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import redis

from exactsum import counters
from exactsum import transport as transports
from exactsum.audit import audit, read_progress
from exactsum.cluster import choose_tags, connect, default_partitions, register_scripts
from exactsum.connection import RetryAborted, retrying
from exactsum.counters import Event
from exactsum.events import NO_PRODUCER_EVENTS
from exactsum.keys import Keys
from exactsum.logs import set_context
from exactsum.metrics import ProducerMetrics
from exactsum.replication import NO_REPLICATION, Replication
from exactsum.retention import expire_run
from exactsum.runs import (
    Attempt,
    ProducerFenced,
    RunPlan,
    RunRefused,
    open_run,
    pushed_bitmap,
    set_state_fenced,
)
from producer_service import report
from producer_service.progress import ProgressReporter
from producer_service.pusher import Pusher, queue_bound
from producer_service.settings import ProducerSettings
from producer_service.source import FileSource, RandomSource, Source, StreamSource, open_input

log = logging.getLogger("producer")

EXIT_USAGE = 2
EXIT_FENCED = 4  # another producer resumed the run: this one stopped, the run is the other's
EXIT_BAD_LINE = 5  # a stream stopped at a bad line; the lines before it were counted exactly


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def run(settings: ProducerSettings, stop: threading.Event,
        abort: threading.Event | None = None) -> int:
    """One attempt at a run. ``stop`` is the first SIGTERM or SIGINT: it ends a stream's input
    (what was read is still pushed and counted) and interrupts any other run; ``abort`` (the
    second signal) interrupts a stream's run too."""
    keys = Keys(settings.key_prefix)
    source = _source(settings, stop)
    if settings.validate_only:
        return _validate_only(source, settings.json)
    streaming = isinstance(source, StreamSource)
    halt = (abort or threading.Event()) if streaming else stop  # ends pushing and waiting

    run_id = settings.run_id or new_run_id()
    transport = transports.get(settings.transport)
    set_context(run=run_id)
    plan = RunPlan(run_id, source.items or 0, settings.batch)
    client = connect(settings.redis, socket_timeout=10.0, name=f"producer-{run_id}")
    # The scripts are acknowledged by --min-replicas replicas (exactsum.cluster.register_scripts);
    # the run's meta writes, on one primary, by a barrier after them. (On a cluster the meta has
    # a copy per partition, on several primaries: no one connection's WAIT covers them.)
    scripts = register_scripts(client, min_replicas=settings.min_replicas,
                               replica_timeout=settings.replica_timeout)
    replication = NO_REPLICATION if settings.redis_cluster else settings.replication
    # A new run's partitions on a Redis Cluster; a resumed run keeps those its meta records.
    tags = (choose_tags(client, settings.partitions or default_partitions(client))
            if settings.redis_cluster else None)
    started = time.monotonic()
    deadline = started + settings.timeout
    producer_name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    metrics = None
    if settings.metrics_port:
        metrics = ProducerMetrics(keys, settings.redis)
        metrics.start_run(run_id)
        metrics.serve(settings.metrics_addr, settings.metrics_port)

    try:
        def start() -> Attempt:
            opened = open_run(client, keys, plan, producer_name, source.fingerprint(),
                              transport=settings.transport, not_resumable=source.not_resumable,
                              tags=tags, **transport.run_meta(settings))
            # A run whose meta a failover lost would have its batches dead-lettered as foreign.
            replication.barrier(client, keys.run(run_id).meta)
            return opened

        attempt = retrying(start, "start or resume the run", log, stop=stop, deadline=deadline)
    except RunRefused as exc:
        log.error("%s", exc)
        sys.stderr.write(f"producer: error: {exc}\n")
        return EXIT_USAGE
    before = PushedBefore.read(client, keys, plan) if attempt.resumed else PushedBefore.none()
    if attempt.resumed:
        log.info("run %s: resumed (attempt %d, after %s): %d of %d batches (%d items) were "
                 "pushed before; pushing the rest", run_id, attempt.epoch,
                 attempt.previous_state or "?", before.batches, plan.batches, before.items)
    else:
        log.info("run %s: %s in batches of up to %d, over %s", run_id,
                 "a stream" if streaming else f"{plan.items} items in {plan.batches} batches",
                 plan.batch_size,
                 f"{len(attempt.partitions)} partitions of a Redis Cluster"
                 if attempt.partitions else transport.queue_label(keys, settings.transport_options))

    bound = queue_bound(settings.max_queue, settings.batch)
    sink = transport.sink(client, keys, scripts, run_id, bound, settings, attempt.epoch)
    pusher = Pusher(sink, run_id, source.batches(before.is_pushed), threads=settings.threads,
                    batch_size=settings.batch, stop=halt, deadline=deadline, rate=settings.rate,
                    events=metrics or NO_PRODUCER_EVENTS, streaming=streaming,
                    partitions=max(1, len(attempt.partitions)))
    progress = ProgressReporter(
        connect(settings.redis, socket_timeout=5.0, name=f"producer-{run_id}-progress"),
        keys, run_id, lambda: source.items, lambda: before.items + pusher.pushed_items,
        interval=settings.progress_interval,
        queue_key=transport.queue_key(keys, settings.transport_options),
        read=(lambda: source.read) if isinstance(source, StreamSource) else None,
    )
    progress.start()
    timed_out, complete = False, False
    try:
        pusher.run()
        if isinstance(source, StreamSource):
            plan = RunPlan(run_id, source.read, settings.batch)
        complete = source.items is not None and before.items + pusher.pushed_items == plan.items
        if complete:
            def mark_pushed() -> None:
                set_state_fenced(client, keys, run_id, attempt.epoch, "pushed",
                                 expected_sum=str(source.expected_sum),
                                 items=plan.items, batches=plan.batches)
                # The expected sum must survive a failover, or the audit has nothing to check.
                replication.barrier(client, keys.run(run_id).meta)

            retrying(mark_pushed, "mark pushed", log, stop=halt, deadline=deadline)
            log.info("run %s: all %d items pushed; waiting for the consumers", run_id,
                     plan.items)
            timed_out = not _wait_for_consumers(client, keys, plan, halt, deadline, replication)
        else:
            timed_out = True
    except ProducerFenced as exc:
        counters.incr(Event.PRODUCER_FENCED)
        log.error("%s", exc)
        sys.stderr.write(f"producer: error: {exc}\n")
        return EXIT_FENCED
    except RetryAborted as exc:
        log.error("run %s: gave up: %s", run_id, exc)
        timed_out = True
    finally:
        progress.finished.set()
        progress.join()
    if halt.is_set():
        log.warning("run %s: interrupted", run_id)
    elapsed = time.monotonic() - started

    result = retrying(lambda: audit(client, keys, plan, source.expected_sum, complete),
                      "audit", log, deadline=time.monotonic() + 60)
    status = report.exit_status(result, timed_out)
    final_state = {0: "verified", 3: "dead-lettered"}.get(status, "unverified")
    if not complete:
        final_state = "interrupted"
    try:
        retrying(lambda: set_state_fenced(client, keys, run_id, attempt.epoch, final_state,
                                          retention_s=settings.retention),
                 "record verdict", log, deadline=time.monotonic() + 30)
        retrying(lambda: expire_run(client, keys, run_id, settings.retention),
                 "set retention", log, deadline=time.monotonic() + 30)
    except ProducerFenced as exc:
        counters.incr(Event.PRODUCER_FENCED)
        sys.stderr.write(f"producer: error: {exc}\n")
        return EXIT_FENCED
    except RetryAborted as exc:
        log.error("run %s: could not record the verdict: %s", run_id, exc)
    facts = report.Facts(
        epoch=attempt.epoch, resumed=attempt.resumed, pushed_before=before.items,
        complete=complete, batch_size=settings.batch,
        lines_read=source.read if isinstance(source, StreamSource) else None,
        ended_by=source.ended_by if isinstance(source, StreamSource) else None,
        input_error=source.error if isinstance(source, StreamSource) else None)
    text = (report.as_json(result, elapsed, timed_out, facts) if settings.json
            else report.as_text(result, elapsed, timed_out, facts))
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if facts.input_error is not None:
        sys.stderr.write(f"producer: error: {facts.input_error}; the lines before it were "
                         "pushed and counted\n")
        if status == 0:
            return EXIT_BAD_LINE
    return status


def _validate_only(source: Source, as_json: bool) -> int:
    """``--validate-only``: the validation pass alone (a stream is read to its end)."""
    if not isinstance(source, FileSource):  # a file's first pass was its validation
        for _ in source.batches():
            pass
    error = source.error if isinstance(source, StreamSource) else None
    items = source.read if isinstance(source, StreamSource) else source.items
    record = {"items": items, "sum": source.expected_sum, "fingerprint": source.fingerprint(),
              "input_error": error, "peak_rss_mib": report.peak_rss_mib()}
    if as_json:
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        sys.stdout.write(f"valid: {items} items, sum {source.expected_sum}, fingerprint "
                         + " ".join(f"{k}={v}" for k, v in source.fingerprint().items()) + "\n")
    if error is not None:
        sys.stderr.write(f"producer: error: {error}\n")
        return EXIT_USAGE
    return 0


def _source(settings: ProducerSettings, stop: threading.Event) -> Source:
    if settings.input is not None:
        return open_input(settings.input, settings.batch, stop)
    return RandomSource(settings.count, settings.min, settings.max, settings.seed,
                        settings.batch)


@dataclass(frozen=True)
class PushedBefore:
    """The batches an earlier attempt of the run pushed (its ``pushed`` bitmap when this one
    began): not made or sent again. The bitmap is a bit per batch (125 KB for a million)."""

    bitmap: bytes
    batches: int
    items: int

    @staticmethod
    def none() -> PushedBefore:
        return PushedBefore(b"", 0, 0)

    @staticmethod
    def read(client: redis.Redis, keys: Keys, plan: RunPlan) -> PushedBefore:
        # On a Redis Cluster, the partitions' bitmaps OR-ed (each has its own batches' bits).
        bitmap = retrying(lambda: pushed_bitmap(client, keys, plan.run_id),
                          "read the pushed batches", log, deadline=time.monotonic() + 60)
        batches = sum(bin(byte).count("1") for byte in bitmap)
        last = plan.batches - 1
        return PushedBefore(bitmap, batches, plan.items_in(batches, _bit(bitmap, last)))

    def is_pushed(self, seq: int) -> bool:
        return _bit(self.bitmap, seq)


def _bit(bitmap: bytes, seq: int) -> bool:
    """Bit ``seq`` of a Redis bitmap (bit 0 is the high bit of byte 0)."""
    return 0 <= seq < len(bitmap) * 8 and bool(bitmap[seq >> 3] & (0x80 >> (seq & 7)))


def _wait_for_consumers(
    client: redis.Redis, keys: Keys, plan: RunPlan, stop: threading.Event, deadline: float,
    replication: Replication = NO_REPLICATION,
) -> bool:
    """Poll until every item is committed or dead-lettered. False on timeout or stop."""
    pause = 0.005

    def resolved() -> int:
        found = read_progress(client, keys, plan.run_id).resolved
        if found >= plan.items and replication.enabled:
            # The commits just read must be on the replicas before the audit reads them: a
            # failover in between would otherwise make a finished run look short.
            replication.barrier(client, keys.run(plan.run_id).meta)
            found = read_progress(client, keys, plan.run_id).resolved
        return found

    while True:
        done = retrying(resolved, "read progress", log, stop=stop, deadline=deadline)
        if done >= plan.items:
            return True
        if time.monotonic() >= deadline:
            log.error("run %s: timed out with %d of %d items resolved", plan.run_id, done,
                      plan.items)
            return False
        if stop.wait(pause):
            return False
        pause = min(pause * 2, 0.1)
