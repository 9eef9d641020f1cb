"""Dramatiq with its Redis broker: one message per number, worker processes x threads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench import procs
from bench.competitors import common

# The broker comes from the environment: the workers import this module by name.
dramatiq.set_broker(RedisBroker(url=os.environ.get(common.URL_ENV, "redis://127.0.0.1:6379/0")))


@dramatiq.actor(queue_name="bench", max_retries=0)
def add(value: int) -> None:
    common.add(value)


@dramatiq.actor(queue_name="bench", max_retries=0)
def warm() -> None:
    common.warm()


def start_workers(processes: int, threads: int) -> Any:
    def start(url: str, workdir: Path) -> list[procs.Proc]:
        return [procs.Proc("dramatiq", [procs.PYTHON, "-m", "dramatiq", __name__,
                                        "--processes", str(processes),
                                        "--threads", str(threads)],
                           common.env(url), workdir)]
    return start


def _broker(url: str) -> RedisBroker:
    broker = RedisBroker(url=url)
    dramatiq.set_broker(broker)
    for actor in (add, warm):
        actor.broker = broker
        broker.declare_actor(actor)
    return broker


def enqueue_warm(url: str, jobs: int) -> None:
    _broker(url)
    for _ in range(jobs):
        warm.send()


def enqueue(url: str, values: list[int]) -> None:
    _broker(url)
    for value in values:
        add.send(value)


def run(count: int, workdir: Path, *, processes: int = 2, threads: int = 8,
        **kwargs: Any) -> dict[str, Any]:
    config = {"processes": processes, "threads": threads}
    return common.measure("dramatiq", config, count, workdir,
                          start_workers(processes, threads), enqueue_warm, enqueue, **kwargs)
