"""One producer run: plan it, push it, wait for the consumers, audit it, report it."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid

import redis

from exactsum.connection import RetryAborted, make_client, retrying
from exactsum.events import NO_PRODUCER_EVENTS
from exactsum.keys import Keys, RqKeys
from exactsum.logs import set_context
from exactsum.metrics import ProducerMetrics
from exactsum.replication import NO_REPLICATION, Replication
from exactsum.rqjobs import JobOptions
from exactsum.runs import RunPlan, audit, create_run, expire_run, read_progress, set_state
from exactsum.scripts import Scripts
from producer_service import report
from producer_service.progress import ProgressReporter
from producer_service.pusher import BatchSink, ListSink, Pusher, queue_bound
from producer_service.rq_sink import RqSink
from producer_service.settings import ProducerSettings
from producer_service.source import FileSource, RandomSource

log = logging.getLogger("producer")

EXIT_USAGE = 2


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def run(settings: ProducerSettings, stop: threading.Event) -> int:
    keys = Keys(settings.key_prefix)
    source: FileSource | RandomSource
    if settings.input is not None:
        source = FileSource.open(settings.input, settings.batch)
    else:
        source = RandomSource(settings.count, settings.min, settings.max, settings.seed,
                              settings.batch)

    run_id = settings.run_id or new_run_id()
    job_options = (JobOptions(queue=settings.rq_queue, timeout_s=settings.rq_job_timeout,
                              retries=settings.rq_retries,
                              result_ttl_s=settings.rq_result_ttl)
                   if settings.transport == "rq" else None)
    set_context(run=run_id)
    plan = RunPlan(run_id, source.items, settings.batch)
    client = make_client(settings.redis, socket_timeout=10.0, name=f"producer-{run_id}")
    replication = settings.replication
    scripts = Scripts.register(client)
    started = time.monotonic()
    deadline = started + settings.timeout
    producer_name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    metrics = None
    if settings.metrics_port:
        metrics = ProducerMetrics(keys, settings.redis)
        metrics.start_run(run_id)
        metrics.serve(settings.metrics_addr, settings.metrics_port)

    try:
        def create() -> None:
            create_run(client, keys, plan, producer_name, settings.transport,
                       **(job_options.as_meta() if job_options else {}))
            # A run whose meta a failover lost would have its batches dead-lettered as foreign.
            replication.barrier(client, keys.run(run_id).meta)

        retrying(create, "create run", log,
                 stop=stop, deadline=deadline)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    log.info("run %s: %d items in %d batches of up to %d, over %s", run_id, plan.items,
             plan.batches, plan.batch_size,
             f"RQ queue {settings.rq_queue!r}" if settings.transport == "rq" else keys.queue)

    bound = queue_bound(settings.max_queue, settings.batch)
    sink: BatchSink
    if job_options is not None:
        sink = RqSink(client, keys, run_id, bound, job_options, replication)
    else:
        sink = ListSink(keys, scripts, run_id, bound, replication)
    pusher = Pusher(sink, run_id, source.batches(), threads=settings.threads,
                    batch_size=settings.batch, stop=stop, deadline=deadline, rate=settings.rate,
                    events=metrics or NO_PRODUCER_EVENTS)
    progress = ProgressReporter(
        make_client(settings.redis, socket_timeout=5.0, name=f"producer-{run_id}-progress"),
        keys, run_id, plan.items, lambda: pusher.pushed_items,
        interval=settings.progress_interval,
        queue_key=RqKeys(settings.rq_queue).queue if settings.transport == "rq" else None,
    )
    progress.start()
    timed_out = False
    try:
        pusher.run()
        if pusher.pushed_items == plan.items:
            def mark_pushed() -> None:
                set_state(client, keys, run_id, "pushed", expected_sum=str(source.expected_sum))
                replication.barrier(client, keys.run(run_id).meta)

            retrying(mark_pushed, "mark pushed", log, stop=stop, deadline=deadline)
            log.info("run %s: all %d items pushed; waiting for the consumers", run_id,
                     plan.items)
            timed_out = not _wait_for_consumers(client, keys, plan, stop, deadline, replication)
        else:
            timed_out = True
    except RetryAborted as exc:
        log.error("run %s: gave up: %s", run_id, exc)
        timed_out = True
    finally:
        progress.finished.set()
        progress.join()
    if stop.is_set():
        log.warning("run %s: interrupted", run_id)
    elapsed = time.monotonic() - started

    result = retrying(lambda: audit(client, keys, plan, source.expected_sum), "audit", log,
                      deadline=time.monotonic() + 60)
    status = report.exit_status(result, timed_out)
    final_state = {0: "verified", 3: "dead-lettered"}.get(status, "unverified")
    try:
        retrying(lambda: set_state(client, keys, run_id, final_state,
                                   retention_s=settings.retention),
                 "record verdict", log, deadline=time.monotonic() + 30)
        retrying(lambda: expire_run(client, keys, run_id, settings.retention),
                 "set retention", log, deadline=time.monotonic() + 30)
    except RetryAborted as exc:
        log.error("run %s: could not record the verdict: %s", run_id, exc)
    text = (report.as_json(result, elapsed, timed_out) if settings.json
            else report.as_text(result, elapsed, timed_out))
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return status


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
