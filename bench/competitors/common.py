"""What the competitors share: the numbers, the job's body, and the measured, verified run."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from bench import procs, server
from producer_service.source import RandomSource

SUM_KEY = "bench:sum"
DONE_KEY = "bench:done"
WARM_KEY = "bench:warm"
URL_ENV = "BENCH_REDIS_URL"

_client: redis.Redis | None = None


def numbers(count: int, seed: int = 1) -> tuple[list[int], int]:
    """The numbers the producer pushes for this seed (its default range 1..11), and their sum."""
    source = RandomSource(count, 1, 11, seed, batch_size=1000)
    values = [int(v) for batch in source.batches() for v in batch.body.split(",") if v]
    return values, source.expected_sum


def client() -> redis.Redis:
    """The job's own connection, made once per worker process (or thread-safe pool)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ[URL_ENV])
    return _client


def add(value: int) -> None:
    """The job: add one number to the sum and count one completion, in one round trip."""
    pipe = client().pipeline(transaction=True)
    pipe.incrby(SUM_KEY, value)
    pipe.incr(DONE_KEY)
    pipe.execute()


def add_many(values: list[int]) -> None:
    """The batched job: add a list of numbers and count each one, in one round trip."""
    pipe = client().pipeline(transaction=True)
    pipe.incrby(SUM_KEY, sum(values))
    pipe.incrby(DONE_KEY, len(values))
    pipe.execute()


def warm() -> None:
    client().incr(WARM_KEY)


def env(url: str) -> dict[str, str]:
    out = dict(os.environ)
    out[URL_ENV] = url
    out["PYTHONUNBUFFERED"] = "1"
    return out


def measure(
    name: str,
    config: dict[str, Any],
    count: int,
    workdir: Path,
    start_workers: Callable[[str, Path], Sequence[procs.Proc]],
    enqueue_warm: Callable[[str, int], None],
    enqueue: Callable[[str, list[int]], None],
    *,
    fsync: str = server.DEFAULT_FSYNC,
    timeout: float = 300.0,
    seed: int = 1,
) -> dict[str, Any]:
    """Start a fresh Redis and the workers, warm them up, then time ``count`` jobs and check."""
    workdir.mkdir(parents=True, exist_ok=True)
    values, expected = numbers(count, seed)
    result: dict[str, Any] = {"kind": name, "config": config, "items": count}
    redis_server = server.start(fsync)
    workers: Sequence[procs.Proc] = ()
    try:
        conn = redis_server.client()
        workers = start_workers(redis_server.url, workdir)
        warm_jobs = 4 * max(1, len(workers))
        enqueue_warm(redis_server.url, warm_jobs)
        _wait_for(lambda: int(conn.get(WARM_KEY) or 0) >= warm_jobs, 60, workers, "warm-up")
        time.sleep(0.2)
        cpu_before = server.cpu_seconds(conn)
        started = time.perf_counter()
        enqueue(redis_server.url, values)
        enqueued = time.perf_counter() - started
        _wait_for(lambda: int(conn.get(DONE_KEY) or 0) >= count, timeout, workers, "the jobs")
        elapsed = time.perf_counter() - started
        time.sleep(0.3)  # a job run twice would show up now
        done, total = int(conn.get(DONE_KEY) or 0), int(conn.get(SUM_KEY) or 0)
        result.update(
            elapsed_s=round(elapsed, 3),
            enqueue_s=round(enqueued, 3),
            items_per_s=round(count / elapsed, 1),
            exact=(done == count and total == expected),
            report={"done": done, "sum": total, "expected_sum": expected,
                    "duplicated": max(0, done - count)},
            cpu_s={"workers": round(sum(procs.tree_cpu_seconds(w.pid) for w in workers), 3),
                   "redis": round(server.cpu_seconds(conn) - cpu_before, 3)},
            redis_commands=server.command_stats(conn),
        )
        return result
    except (TimeoutError, RuntimeError) as exc:
        result.update(exact=False, error=str(exc))
        return result
    finally:
        for worker in workers:
            worker.stop(timeout=15)
        redis_server.close()


def _wait_for(predicate: Callable[[], bool], timeout: float, workers: Sequence[procs.Proc],
              what: str) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.002
    while not predicate():
        for worker in workers:
            if not worker.alive():
                raise RuntimeError(f"{worker.name} exited during {what}: "
                                   f"{worker.stderr_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
