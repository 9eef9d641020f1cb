"""RQ: one job per number, run by RQ's SimpleWorker (in-process) or its default forking Worker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from rq import Queue

from bench import procs
from bench.competitors import common

QUEUE = "bench"
ENQUEUE_CHUNK = 1000


def start_workers(worker_class: str, processes: int) -> Any:
    def start(url: str, workdir: Path) -> list[procs.Proc]:
        return [
            procs.Proc(f"rq-{i}", [procs.PYTHON, "-m", "rq.cli", "worker", "--url", url,
                                   "--worker-class", worker_class, "--quiet", QUEUE],
                       common.env(url), workdir)
            for i in range(processes)
        ]
    return start


def _enqueue_calls(url: str, func: Any, args_list: Sequence[tuple[Any, ...]]) -> None:
    conn = redis.Redis.from_url(url)
    queue = Queue(QUEUE, connection=conn)
    for start in range(0, len(args_list), ENQUEUE_CHUNK):
        chunk = args_list[start : start + ENQUEUE_CHUNK]
        # enqueue_many sends a chunk of jobs in one pipeline: RQ's fastest way in.
        with conn.pipeline() as pipe:
            queue.enqueue_many([Queue.prepare_data(func, args=a) for a in chunk], pipeline=pipe)
            pipe.execute()


def enqueue_warm(url: str, jobs: int) -> None:
    _enqueue_calls(url, common.warm, [() for _ in range(jobs)])


def enqueue(url: str, values: list[int]) -> None:
    _enqueue_calls(url, common.add, [(v,) for v in values])


def enqueue_batches(per_job: int) -> Any:
    def enqueue(url: str, values: list[int]) -> None:
        _enqueue_calls(url, common.add_many,
                       [(values[i : i + per_job],) for i in range(0, len(values), per_job)])
    return enqueue


def run(count: int, workdir: Path, *, simple: bool, processes: int = 2, per_job: int = 1,
        **kwargs: Any) -> dict[str, Any]:
    """``per_job`` > 1: each job adds a list of that many numbers (batching done by hand)."""
    worker_class = "rq.worker.SimpleWorker" if simple else "rq.worker.Worker"
    name = "rq-simple" if simple else "rq-fork"
    config: dict[str, Any] = {"worker_class": worker_class, "processes": processes}
    if per_job > 1:
        name += f"-{per_job}-per-job"
        config["numbers_per_job"] = per_job
    return common.measure(name, config, count, workdir,
                          start_workers(worker_class, processes), enqueue_warm,
                          enqueue if per_job == 1 else enqueue_batches(per_job), **kwargs)
