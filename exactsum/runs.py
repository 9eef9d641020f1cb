"""A run's record in Redis: its plan, its opening and resume, its epoch and its state.

The producer writes a run's meta before it pushes anything, so that consumers can tell a batch
of a known run from a stray element. A run's progress and audit are in :mod:`exactsum.audit`,
its retention in :mod:`exactsum.retention`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import redis

from exactsum.keys import Keys
from exactsum.scripts import register_one


@dataclass(frozen=True)
class RunPlan:
    """What the producer will push: fixed before the first push."""

    run_id: str
    items: int
    batch_size: int

    @property
    def batches(self) -> int:
        return -(-self.items // self.batch_size)

    @property
    def last_batch_size(self) -> int:
        if self.items == 0:
            return 0
        return self.items - (self.batches - 1) * self.batch_size

    def items_in(self, batches_done: int, last_done: bool) -> int:
        """Items in ``batches_done`` resolved batches, ``last_done`` if the last is among them."""
        if not last_done:
            return batches_done * self.batch_size
        return (batches_done - 1) * self.batch_size + self.last_batch_size


class RunRefused(ValueError):
    """A run id that exists cannot be taken up by this producer; the message says why."""


class ProducerFenced(Exception):
    """Another producer took this run over (its epoch is higher): this one must stop."""


@dataclass(frozen=True)
class Attempt:
    """One producer's attempt at a run: the first, or a resumption of an unfinished one."""

    epoch: int  # the run's epoch for this attempt; a push or state change of another is fenced
    resumed: bool
    previous_state: str = ""  # the state the run was in when this attempt took it up
    partitions: tuple[str, ...] = ()  # the run's partition tags on a Redis Cluster


SOURCE_PREFIX = "source_"
# How long a producer may go without marking its run (about once a second while it lives)
# before status and the audit call it gone.
PRODUCER_SILENCE_S = 10.0


def _meta_text(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def open_run(client: redis.Redis, keys: Keys, plan: RunPlan, producer: str,
             fingerprint: dict[str, str], *, transport: str = "native",
             not_resumable: str | None = None, tags: list[str] | None = None,
             **transport_facts: str | int) -> Attempt:
    """Start the run, or resume it if it exists: one atomic step (WATCH on the meta).

    A new run's meta records the plan, the source's ``fingerprint`` (``source_*`` fields) and
    epoch 1. An existing run is resumed only if its recorded fingerprint and transport equal
    this producer's and its source can be made again; then its epoch goes up by one, which
    fences any producer still working on it (``push.lua`` and :func:`set_state_fenced` check
    the epoch). Otherwise :class:`RunRefused` names what differs.

    ``producer`` must be unique to this producer process: a call re-sent after a lost reply
    finds its own name in the meta and takes the epoch it had already been given.
    ``transport_facts`` are what the transport needs to know of the run later (the RQ queue and
    job options: :meth:`exactsum.transport.rq.jobs.JobOptions.as_meta`).
    The expected sum of a random run is known only when its last batch is made; it is written
    then, by :func:`set_state_fenced`.
    ``tags`` are a new run's partitions on a Redis Cluster (batch ``n`` goes to partition
    ``n mod len(tags)``); a resumed run keeps the tags its meta records. Before this returns,
    each partition's copy of the meta (which that partition's scripts check) carries the
    attempt's epoch, and the tags are registered for the consumers.
    """
    rk = keys.run(plan.run_id)
    now_ms = int(time.time() * 1000)
    with client.pipeline(transaction=True) as tx:
        while True:
            try:
                tx.watch(rk.meta)  # type: ignore[no-untyped-call]
                meta = _meta_text(cast(dict[bytes, bytes], tx.hgetall(rk.meta)))
                if meta.get("producer") == producer:
                    epoch = int(meta.get("epoch", "1"))
                    return _after_open(
                        client, keys, plan.run_id, now_ms,
                        Attempt(epoch, epoch > 1, meta.get("previous_state", ""),
                                _tags_of(meta)))
                common: dict[str, str | int] = {
                    "producer": producer, "state": "pushing", "producer_seen_ms": now_ms,
                    **transport_facts}
                if not meta:
                    mapping: dict[str, str | int] = {
                        **common, "batch_size": plan.batch_size, "batches": plan.batches,
                        "items": plan.items, "started_ms": now_ms, "transport": transport,
                        "epoch": 1, "resumable": not_resumable or "yes",
                        **{SOURCE_PREFIX + k: v for k, v in fingerprint.items()}}
                    if tags:
                        mapping["partitions"] = ",".join(tags)
                    tx.multi()
                    tx.hset(rk.meta, mapping=mapping)  # type: ignore[arg-type]
                    tx.execute()
                    return _after_open(client, keys, plan.run_id, now_ms,
                                       Attempt(1, False, "", tuple(tags or ())))
                problem = resume_problem(meta, fingerprint, transport, not_resumable)
                if problem:
                    raise RunRefused(f"run {plan.run_id!r} exists and cannot be resumed: "
                                     f"{problem}")
                epoch = int(meta.get("epoch", "1")) + 1
                previous = meta.get("state", "")
                tx.multi()
                resumed: dict[str, str | int] = {
                    **common, "epoch": epoch, "resumed_ms": now_ms, "previous_state": previous}
                tx.hset(rk.meta, mapping=resumed)  # type: ignore[arg-type]
                tx.hdel(rk.meta, "retention_s")
                tx.persist(rk.meta)  # a finished attempt had set its expiry
                tx.execute()
                return _after_open(client, keys, plan.run_id, now_ms,
                                   Attempt(epoch, True, previous, _tags_of(meta)))
            except redis.WatchError:
                continue


def resume_problem(meta: dict[str, str], fingerprint: dict[str, str], transport: str,
                   not_resumable: str | None) -> str | None:
    """Why a run with this ``meta`` cannot be resumed from this source; None if it can."""
    recorded = {k[len(SOURCE_PREFIX):]: v for k, v in meta.items() if k.startswith(SOURCE_PREFIX)}
    if not recorded:
        return "it records no source fingerprint (made by an older producer)"
    if meta.get("resumable", "yes") != "yes":
        return meta["resumable"]
    differ = [f"{name} is {recorded.get(name, '(none)')} there, {fingerprint.get(name, '(none)')}"
              " here" for name in sorted(recorded.keys() | fingerprint.keys())
              if recorded.get(name) != fingerprint.get(name)]
    if meta.get("transport", "native") != transport:
        differ.append(f"transport is {meta.get('transport', 'native')} there, {transport} here")
    if differ:
        return "its source differs from the first attempt's: " + "; ".join(differ)
    if not_resumable:
        return not_resumable
    return None


def create_run(client: redis.Redis, keys: Keys, plan: RunPlan, producer: str,
               transport: str = "native", tags: list[str] | None = None,
               **transport_facts: str | int) -> None:
    """A new run with no source fingerprint (tests and tools that push by hand); it cannot be
    resumed. Refuses a run id that already exists. ``tags``: as for :func:`open_run`."""
    try:
        open_run(client, keys, plan, producer, {"kind": "unknown"}, transport=transport,
                 not_resumable="it was made without a source fingerprint", tags=tags,
                 **transport_facts)
    except RunRefused:
        raise ValueError(f"run id {plan.run_id!r} already exists; pick another --run-id") from None


def _tags_of(meta: dict[str, str]) -> tuple[str, ...]:
    """The partition tags a run's meta records (none on a single Redis)."""
    return tuple(meta["partitions"].split(",")) if meta.get("partitions") else ()


def _after_open(client: redis.Redis, keys: Keys, run_id: str, now_ms: int,
                attempt: Attempt) -> Attempt:
    """What :func:`open_run` does after the meta's transaction, idempotently (a re-sent call
    redoes it): these keys are in other hash slots than the meta on a Redis Cluster, so they
    cannot share its MULTI there. The run is listed in ``runs`` (NX: its first start counts); a
    resumed run's producer keys lose the expiry a finished attempt gave them; on a cluster each
    partition's copy of the meta gets the attempt's epoch (``push.lua`` checks it there) and
    the tags are registered for the consumers. All of it is done before the first push."""
    client.zadd(keys.runs, {run_id: now_ms}, nx=True)
    tags = list(attempt.partitions)
    if tags:
        write_partition_metas(client, keys, run_id, tags, run=run_id, partitions=len(tags),
                              epoch=attempt.epoch)
    if attempt.resumed:
        pipe = client.pipeline(transaction=False)
        for part in [keys.home, *(keys.partition(tag) for tag in tags)]:
            rk = part.run(run_id)
            for name in PRODUCER_WRITES:
                pipe.persist(getattr(rk, name))
        pipe.execute()
    if tags:
        client.sadd(keys.partitions, *tags)
    return attempt


def write_partition_metas(client: redis.Redis, keys: Keys, run_id: str, tags: list[str],
                          epoch: int, **fields: str | int) -> dict[str, int]:
    """Copy ``epoch`` and ``fields`` of the run's meta into each partition's copy, which the
    scripts of that partition read (they cannot read the run's own meta: it is in another slot).

    The epoch only ever goes up there (``raise_epoch.lua``): a copy that already holds a later
    attempt's epoch is left as it is, so a producer that stalled inside its own resume cannot
    take a partition back from the producer that resumed after it. Returns each tag's epoch
    after the call; one above ``epoch`` means this producer has been overtaken (its pushes
    there are fenced)."""
    raise_epoch = register_one(client, "raise_epoch")
    args: list[str | int] = [epoch]
    for name, value in fields.items():
        args += [name, value]
    return {tag: int(raise_epoch(keys=[keys.partition(tag).run(run_id).meta], args=args))
            for tag in tags}


def pushed_bitmap(client: redis.Redis, keys: Keys, run_id: str) -> bytes:
    """The run's ``pushed`` bitmap; on a Redis Cluster the partitions' bitmaps OR-ed together
    (each holds the bits of its own batches only)."""
    maps = [cast(bytes | None, client.get(part.run(run_id).pushed)) or b""
            for part in run_partitions(client, keys, run_id)]
    width = max((len(m) for m in maps), default=0)
    merged = bytearray(width)
    for bitmap in maps:
        for index, byte in enumerate(bitmap):
            merged[index] |= byte
    return bytes(merged)


def partitions_of(keys: Keys, partitions_field: bytes | str | None) -> list[Keys]:
    """The keys of each partition of a run, from its meta's ``partitions`` field: the tags on a
    Redis Cluster, absent on a single Redis (one partition, the untagged layout)."""
    if not partitions_field:
        return [keys.home]
    text = partitions_field.decode() if isinstance(partitions_field, bytes) else partitions_field
    return [keys.partition(tag) for tag in text.split(",")]


def run_partitions(client: redis.Redis, keys: Keys, run_id: str) -> list[Keys]:
    # HGETALL of a small hash rather than HGET: the ACL users (exactsum.acl) that read a run's
    # meta are allowed HGETALL already.
    meta = cast(dict[bytes, bytes], client.hgetall(keys.home.run(run_id).meta))
    return partitions_of(keys, meta.get(b"partitions"))


def set_state(
    client: redis.Redis, keys: Keys, run_id: str, state: str, **fields: int | str
) -> None:
    mapping = {"state": state, f"{state}_ms": int(time.time() * 1000), **fields}
    client.hset(keys.run(run_id).meta, mapping=mapping)  # type: ignore[arg-type]


def set_state_fenced(client: redis.Redis, keys: Keys, run_id: str, epoch: int, state: str,
                     **fields: int | str) -> None:
    """:func:`set_state`, only while the run's epoch is still ``epoch`` (WATCH on the meta);
    :class:`ProducerFenced` if another producer has taken the run over."""
    meta = keys.run(run_id).meta
    mapping = {"state": state, f"{state}_ms": int(time.time() * 1000), **fields}
    with client.pipeline(transaction=True) as tx:
        while True:
            try:
                tx.watch(meta)  # type: ignore[no-untyped-call]
                check_epoch(tx.hget(meta, "epoch"), epoch, run_id)
                tx.multi()
                tx.hset(meta, mapping=mapping)  # type: ignore[arg-type]
                tx.execute()
                return
            except redis.WatchError:
                continue


def check_epoch(current: object, epoch: int, run_id: str) -> None:
    """Raise :class:`ProducerFenced` unless the run's recorded epoch is ``epoch``."""
    found = int(cast(bytes, current)) if current is not None else None
    if found != epoch:
        raise ProducerFenced(
            f"run {run_id!r} was taken over by another producer (its epoch is now {found}, "
            f"this producer's is {epoch}); this producer stops and leaves the run to it")


def mark_alive(client: redis.Redis, keys: Keys, run_id: str, **fields: int | str) -> None:
    """The producer's sign of life in its run's meta, about once a second (with what it has
    read so far, for a stream): status and the audit tell a dead producer by its silence."""
    mapping: dict[str, int | str] = {"producer_seen_ms": int(time.time() * 1000), **fields}
    client.hset(keys.run(run_id).meta, mapping=mapping)  # type: ignore[arg-type]


FINAL_STATES = frozenset({"verified", "unverified", "dead-lettered"})
# A run in one of these states was not fully pushed: it can be resumed. An interrupted run's
# producer gave its own keys their retention; when its meta expires unresumed, the consumers
# expire the rest (expire_finished_runs).
INCOMPLETE_STATES = frozenset({"pushing", "interrupted"})
# Each side expires the keys it writes, so neither needs write access to the other's keys
# (with the ACL users of exactsum_admin.acl, the producer cannot touch a sum, not even its TTL).
PRODUCER_WRITES = ("meta", "pushed", "batches")
