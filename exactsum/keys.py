"""Every Redis key name the services use, in one place.

The layout (prefix ``pc`` by default, see ``KEY_PREFIX``)::

    pc:queue                       list    messages waiting (LPUSH; consumers take the right end)
    pc:inflight:<consumer>:<n>     list    messages claimed by thread <n> of one consumer process
    pc:consumer:<consumer>         string  heartbeat (JSON facts about the process), with a TTL
    pc:consumers                   zset    consumer id -> last heartbeat (ms); for status only
    pc:dead                        list    dead letters that belong to no run (foreign elements)
    pc:stats:reclaimed             string  messages moved back to the queue from dead consumers
    pc:runs                        zset    run id -> start time (ms)
    pc:run:<id>:meta               hash    what the producer pushed: items, expected sum, batches...
    pc:run:<id>:pushed             bitmap  batch numbers already pushed (idempotent pushes)
    pc:run:<id>:done               bitmap  batch numbers resolved (committed or dead-lettered)
    pc:run:<id>:sum                string  the committed sum
    pc:run:<id>:committed          string  items committed
    pc:run:<id>:dead_items         string  items dead-lettered
    pc:run:<id>:dead               list    the run's dead letters (JSON: reason, message, consumer)
    pc:run:<id>:by_consumer        hash    consumer id -> items it committed
    pc:run:<id>:stale              string  commits refused because the claim or the batch was no
                                           longer the committer's (late returners, re-sent commits)
    pc:run:<id>:attempts           hash    batch number -> failed processing attempts so far
    pc:run:<id>:dropped            list    dead letters an operator dropped (still accounted)
    pc:dropped                     list    dropped dead letters of no run
    pc:run:<id>:batches            hash    RQ transport: batch number -> element, from the push
                                           until the batch is resolved (the numbers of a job)
    pc:run:<id>:leases             hash    RQ transport: batch number -> lease, raised each time
                                           a dead worker's job is put back (fences its commit)
    pc:run:<id>:acks               hash    --min-replicas: a small write of our own before WAIT,
                                           acknowledging a MULTI/EXEC (RQ transport); on a key
                                           that no transaction WATCHes

On Redis Cluster (``--redis-cluster``, docs/cluster.md) a run is split into partitions, each named
by a hash tag, and every key that a script or transaction touches for a partition carries that
tag, so it lives in one hash slot. :meth:`Keys.partition` gives the keys of one partition: the same
names as above with ``{<tag>}`` after the prefix (``pc:{0-3}:queue``, ``pc:{0-3}:run:<id>:sum``,
``pc:{0-3}:inflight:<consumer>:<n>``, ``pc:{0-3}:consumer:<consumer>``...). A partition's
``run:<id>:meta`` is a copy of the few facts its scripts read (that the run exists); the run's own
meta, ``pc:runs``, ``pc:consumers`` and the heartbeats for status keep their untagged names, and

    pc:partitions                  set     every partition tag producers have used (consumers
                                           claim from all of them)

Without Cluster there is one partition, the untagged layout itself (``Keys.tag`` is None).

With the RQ transport (``--transport rq``) the queue is RQ's, under RQ's own key names
(:class:`RqKeys`): ``rq:queue:<name>`` holds job ids, ``rq:job:<job id>`` a job, and so on.
A job id is ``<prefix>-<run id>-<batch number>`` (:func:`job_id`).

The ``<consumer>`` and ``<id>`` parts never contain ``:``, so a key splits back into its parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A partition tag goes between braces in key names: no braces, no ':' (keys split on it).
PARTITION_TAG_RE = re.compile(r"^[A-Za-z0-9.-]{1,32}$")

RUN_KEY_SUFFIXES = (
    "meta",
    "pushed",
    "done",
    "sum",
    "committed",
    "dead_items",
    "dead",
    "by_consumer",
    "stale",
    "attempts",
    "dropped",
    "batches",
    "leases",
    "acks",
)


@dataclass(frozen=True)
class RunKeys:
    """The keys of one run."""

    meta: str
    pushed: str
    done: str
    sum: str
    committed: str
    dead_items: str
    dead: str
    by_consumer: str
    stale: str
    attempts: str
    dropped: str
    batches: str
    leases: str
    acks: str

    def all(self) -> list[str]:
        return [getattr(self, name) for name in RUN_KEY_SUFFIXES]


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix; build one per process and pass it around.

    ``tag`` is a Redis Cluster partition's hash tag (:meth:`partition`); None is the untagged
    layout of a single Redis, and the home of what every partition shares.
    """

    prefix: str = "pc"
    tag: str | None = None

    @property
    def base(self) -> str:
        """What a partition's keys start with: the prefix, then the hash tag if any."""
        return self.prefix if self.tag is None else f"{self.prefix}:{{{self.tag}}}"

    def partition(self, tag: str | None) -> Keys:
        """The keys of the partition ``tag`` (None: the untagged layout)."""
        if tag is not None and not PARTITION_TAG_RE.match(tag):
            raise ValueError(f"{tag!r} is not a partition tag (letters, digits, '-', '.')")
        return Keys(self.prefix, tag)

    @property
    def home(self) -> Keys:
        """The untagged keys under the same prefix (run meta, registries, status heartbeats)."""
        return Keys(self.prefix)

    @property
    def partitions(self) -> str:
        """Set of partition tags in use on a Redis Cluster."""
        return f"{self.prefix}:partitions"

    @property
    def queue(self) -> str:
        return f"{self.base}:queue"

    @property
    def consumers(self) -> str:
        return f"{self.prefix}:consumers"

    @property
    def dead(self) -> str:
        return f"{self.base}:dead"

    @property
    def dropped(self) -> str:
        return f"{self.base}:dropped"

    @property
    def reclaimed(self) -> str:
        return f"{self.base}:stats:reclaimed"

    @property
    def runs(self) -> str:
        return f"{self.prefix}:runs"

    def heartbeat(self, consumer_id: str) -> str:
        return f"{self.base}:consumer:{consumer_id}"

    def inflight(self, consumer_id: str, thread: int) -> str:
        return f"{self.base}:inflight:{consumer_id}:{thread}"

    @property
    def inflight_pattern(self) -> str:
        """SCAN pattern that finds every in-flight list, whoever owns it."""
        return f"{self.base}:inflight:*"

    @property
    def partitioned_inflight_pattern(self) -> str:
        """SCAN pattern that finds every in-flight list of every partition of a cluster."""
        return f"{self.prefix}:{{*}}:inflight:*"

    def partition_of_key(self, key: str) -> Keys:
        """The keys of the partition that ``key`` (one of ours) belongs to."""
        if key.startswith(f"{self.prefix}:{{"):
            return self.partition(key[len(self.prefix) + 2 : key.index("}")])
        return self.home

    def inflight_owner(self, inflight_key: str) -> str:
        """The consumer id inside an in-flight list's name."""
        rest = inflight_key[len(self.base) + len(":inflight:") :]
        return rest.rsplit(":", 1)[0]

    def run(self, run_id: str) -> RunKeys:
        base = f"{self.base}:run:{run_id}"
        return RunKeys(**{name: f"{base}:{name}" for name in RUN_KEY_SUFFIXES})


@dataclass(frozen=True)
class RqKeys:
    """RQ's key names for one RQ queue, as RQ 3 writes them (its ``rq:`` namespace).

    Only the RQ transport's scripts and its reclaimer use these; everything else goes through
    RQ's own classes. They are here so that every key name the services touch is in this file.
    """

    queue_name: str

    @property
    def queue(self) -> str:
        """List of job ids waiting (RQ pushes on the right and its workers take the left)."""
        return f"rq:queue:{self.queue_name}"

    @property
    def intermediate(self) -> str:
        """List of job ids a worker has taken but not yet recorded as started."""
        return f"rq:queue:{self.queue_name}:intermediate"

    def first_seen(self, job_id: str) -> str:
        """When RQ's maintenance first saw ``job_id`` in the intermediate queue."""
        return f"{self.intermediate}:first_seen:{job_id}"

    @property
    def started(self) -> str:
        """RQ's StartedJobRegistry: zset of ``<job id>:<execution id>`` being run."""
        return f"rq:wip:{self.queue_name}"

    @property
    def failed(self) -> str:
        """RQ's FailedJobRegistry: zset of job ids whose retries ran out."""
        return f"rq:failed:{self.queue_name}"

    @staticmethod
    def job(job_id: str) -> str:
        return f"rq:job:{job_id}"

    @staticmethod
    def worker(name: str) -> str:
        """A worker's hash (its pid, state...), with a TTL its heartbeat renews."""
        return f"rq:worker:{name}"

    @staticmethod
    def execution(composite: str) -> str:
        """An execution's hash (it names the worker), from a StartedJobRegistry member."""
        return f"rq:execution:{composite}"


def partition_of(seq: int, partitions: int) -> int:
    """The partition (index into the run's tags) that batch ``seq`` is pushed to and resolved in."""
    return seq % partitions


@dataclass(frozen=True)
class PoolWorkerName:
    """The name of an RQ worker that a consumer service runs: ``<consumer>.w<slot>.<start>``,
    the start-th worker of slot ``slot`` (it is also RQ's worker key, :meth:`RqKeys.worker`).
    Every consumer can tell from it whose worker it is, and whose heartbeat to look at."""

    consumer: str
    slot: int
    start: int

    def __str__(self) -> str:
        return f"{self.consumer}.w{self.slot}.{self.start}"

    @classmethod
    def parse(cls, name: str) -> PoolWorkerName | None:
        """None for a worker that no consumer service started (a plain ``rq worker``)."""
        match = _POOL_WORKER_RE.match(name)
        if match is None:
            return None
        return cls(match["consumer"], int(match["slot"]), int(match["start"]))


_POOL_WORKER_RE = re.compile(r"^(?P<consumer>[A-Za-z0-9_-]+)\.w(?P<slot>\d+)\.(?P<start>\d+)$")


def job_id(prefix: str, run_id: str, seq: int) -> str:
    """The RQ job id of one batch. Fixed by the batch, so a re-sent enqueue cannot make a second
    job, and the job says which batch it is. RQ allows letters, digits, ``_`` and ``-`` only."""
    return f"{prefix}-{run_id}-{seq}"


def parse_job_id(prefix: str, text: str) -> tuple[str, int] | None:
    """``(run id, batch number)`` of one of our job ids under ``prefix``; None for any other."""
    if not text.startswith(prefix + "-"):
        return None
    run_id, _, seq = text[len(prefix) + 1 :].rpartition("-")
    if not run_id or not seq.isdigit():
        return None
    return run_id, int(seq)
