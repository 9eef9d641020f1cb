"""One RQ worker process of a consumer's pool (``python -m exactsum.transport.rq.worker``).

The consumer service starts ``--threads`` of these and watches them (``pool``). Each is
RQ's :class:`~rq.SimpleWorker`, which runs jobs in its own process: RQ's default ``Worker``
forks a child per job, which costs more than counting a batch does. One process per worker,
rather than threads, because RQ's workers are built to own their process: signal handlers,
and the SIGALRM that enforces a job's timeout, work in a process's main thread only.

Two changes to RQ's worker, both about stopping: SIGTERM only asks the worker to stop after the
job in hand (RQ raises an exception into an idle worker, which can land between taking a job id
and recording the job as started, and strand it in RQ's intermediate queue), and the wait for a
job is cut into short blocking pops so that the request is seen within ``DEQUEUE_TIMEOUT_S``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass

import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from exactsum import counters
from exactsum.connection import (
    RedisTarget,
    RetryAborted,
    make_client,
    retrying,
    transient,
)
from exactsum.counters import Event
from exactsum.keys import Keys, RqKeys
from exactsum.logs import set_context, setup_logging
from exactsum.replication import Replication
from exactsum.transport.failures import FailureInjector
from exactsum.transport.rq.job import JobContext, install

log = logging.getLogger("consumer.rq_worker")

CONFIG_ENV = "EXACTSUM_RQ_WORKER"
# A blocking pop must end before the socket times out, or redis-py drops a healthy connection.
DEQUEUE_TIMEOUT_S = 2
SOCKET_TIMEOUT_S = 10.0
# RQ's worker key lives this long plus 60 s; RQ derives its blocking pop timeout from it.
WORKER_TTL_S = 20
# How often RQ's own maintenance runs in each worker (RQ takes a lock so only one does it):
# it retries jobs stranded in its intermediate queue and expired executions.
MAINTENANCE_INTERVAL_S = 15
# Exit status of a worker whose Redis went away and takes writes again (a restart, a Sentinel
# failover): the pool starts the next worker at once, without the backoff meant for workers that
# keep dying. Without it, every restart during a failover (the new primary refuses writes until
# a replica attached, with min-replicas-to-write) doubled the wait, and the first commit on the
# new primary came 3 to 22 s after the kill instead of about 3 s.
EXIT_REDIS_BACK = 75  # EX_TEMPFAIL
# How long a worker waits for that before it exits anyway (status 1, with backoff).
REDIS_BACK_WITHIN_S = 120.0


@dataclass(frozen=True)
class WorkerConfig:
    """What the consumer service hands each worker process (as JSON in ``CONFIG_ENV``)."""

    name: str
    consumer_id: str
    parent_pid: int
    redis_url: str
    redis_sentinels: list[tuple[str, int]]
    redis_sentinel_master: str
    key_prefix: str
    queue: str
    log_level: str
    log_format: str
    fail_rate: float
    flaky_rate: float
    work_cpu_us: float
    work_io_ms: float
    counters_file: str | None = None
    # --min-replicas / --replica-timeout: the jobs' scripts are acknowledged by replicas.
    min_replicas: int = 0
    replica_timeout: float = 2.0

    def to_env(self) -> str:
        return json.dumps(asdict(self))


class PoolWorker(SimpleWorker):
    def _shutdown(self) -> None:
        # Never raise into the worker from the signal handler: the loop below sees the flag.
        self._stop_requested = True
        self.set_shutdown_requested_date()  # type: ignore[no-untyped-call]

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        while not self._stop_requested:
            # With max_idle_time, RQ returns None after one empty wait instead of looping.
            result = super().dequeue_job_and_maintain_ttl(DEQUEUE_TIMEOUT_S, DEQUEUE_TIMEOUT_S)
            if result is not None:
                return result
        return None


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive its consumer service: its heartbeat is the parent's."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def main() -> int:
    config = WorkerConfig(**json.loads(os.environ[CONFIG_ENV]))
    _die_with_parent(config.parent_pid)
    setup_logging(config.log_level, config.log_format, service="consumer",
                  identity=config.name)
    set_context(consumer=config.consumer_id)
    target = RedisTarget(config.redis_url, tuple((h, int(p)) for h, p in config.redis_sentinels),
                         config.redis_sentinel_master)
    client = make_client(target, socket_timeout=SOCKET_TIMEOUT_S, name=config.name)
    install(JobContext(client, Keys(config.key_prefix), config.consumer_id,
                       FailureInjector(config.fail_rate, config.flaky_rate),
                       work_cpu_us=config.work_cpu_us, work_io_ms=config.work_io_ms,
                       replication=Replication(config.min_replicas, config.replica_timeout)))
    worker = PoolWorker([Queue(config.queue, connection=client)], connection=client,
                        name=config.name, worker_ttl=WORKER_TTL_S,
                        maintenance_interval=MAINTENANCE_INTERVAL_S)
    # RQ's work loop ends on its own after a Redis error it does not retry; the consumer
    # service starts a new worker, with backoff, and puts back whatever this one held.
    # RQ logs three lines per job at INFO; ours say what matters (put back, dead-lettered).
    rq_level = "DEBUG" if config.log_level == "DEBUG" else "WARNING"
    # Beside the consumer's file, added up by exactsum.counters.read.
    keep = f"{config.counters_file}.{config.name}" if config.counters_file else None
    # The counters are kept through the wait below too: a reader sees the error counted while
    # the worker still waits.
    with counters.kept_in(keep):
        try:
            worker.work(logging_level=rq_level, with_scheduler=False)
        except redis.RedisError as exc:
            # RQ's clean-up on the way out needs Redis too; RQ has logged the first error.
            counters.incr(Event.RQ_WORKER_REDIS_ERROR)
            log.error("RQ worker %s stopped: %s: %s", config.name, type(exc).__name__, exc)
            if transient(exc) and _wait_for_writes(client, config.name):
                return EXIT_REDIS_BACK
            return 1
    return 0


def _wait_for_writes(client: redis.Redis, name: str) -> bool:
    """Until the primary takes writes again; the write is the deletion of this worker's RQ key,
    which RQ's own clean-up failed to do. False if that did not happen in time."""
    try:
        retrying(lambda: client.delete(RqKeys.worker(name)), "wait for a primary that takes "
                 "writes", log, cap=2.0, deadline=time.monotonic() + REDIS_BACK_WITHIN_S)
    except (RetryAborted, redis.RedisError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
