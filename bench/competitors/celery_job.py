"""Celery with the Redis broker: one task per number, the default prefork pool."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery

from bench import procs
from bench.competitors import common

app = Celery("bench", broker=os.environ.get(common.URL_ENV, "redis://127.0.0.1:6379/0"))
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)


@app.task(name="bench.add")
def add(value: int) -> None:
    common.add(value)


@app.task(name="bench.warm")
def warm() -> None:
    common.warm()


def start_workers(concurrency: int, pool: str) -> Any:
    def start(url: str, workdir: Path) -> list[procs.Proc]:
        return [procs.Proc("celery", [procs.PYTHON, "-m", "celery", "-A", __name__, "worker",
                                      "--pool", pool, "--concurrency", str(concurrency),
                                      "--loglevel", "WARNING", "--without-gossip",
                                      "--without-mingle", "--without-heartbeat"],
                           common.env(url), workdir)]
    return start


def _use(url: str) -> None:
    """Point this process's app at this run's Redis (each run has a fresh server)."""
    if app.conf.broker_url == url:
        return
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    app.conf.broker_url = url


def enqueue_warm(url: str, jobs: int) -> None:
    _use(url)
    for _ in range(jobs):
        warm.delay()


def enqueue(url: str, values: list[int]) -> None:
    _use(url)
    with app.producer_or_acquire() as producer:
        for value in values:
            add.apply_async((value,), producer=producer)


def run(count: int, workdir: Path, *, concurrency: int = 2, pool: str = "prefork",
        **kwargs: Any) -> dict[str, Any]:
    config = {"pool": pool, "concurrency": concurrency}
    return common.measure("celery", config, count, workdir,
                          start_workers(concurrency, pool), enqueue_warm, enqueue, **kwargs)
