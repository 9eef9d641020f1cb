"""A run's record in Redis, its progress and its audit.

The producer writes a run's meta before it pushes anything, so that consumers can tell a batch
of a known run from a stray element. The audit reads only what the consumers' scripts wrote and
compares it with what the producer says it pushed; it is shared by the producer's report and by
anything else that wants to judge a run.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass, field
from typing import cast

import redis

from exactsum.keys import RUN_KEY_SUFFIXES, Keys, RunKeys, partition_of
from exactsum.protocol import ForeignElement, decode
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


def expire_run(client: redis.Redis, keys: Keys, run_id: str, retention_s: int) -> None:
    """The producer's part of retention: its own keys go after ``retention_s`` seconds. The
    consumers expire the rest when they see the run finished (:func:`expire_finished_runs`)."""
    parts = run_partitions(client, keys, run_id)
    pipe = client.pipeline(transaction=False)
    for part in {keys.home, *parts}:
        rk = part.run(run_id)
        for name in PRODUCER_WRITES:
            pipe.expire(getattr(rk, name), retention_s)
    pipe.execute()


def expire_finished_runs(client: redis.Redis, keys: Keys) -> int:
    """The consumers' part of retention: give the keys they wrote for each finished run the
    run's retention time (only where no expiry is set yet), and forget runs whose meta is gone.
    Returns the number of runs forgotten.

    A run whose meta is gone has had its retention (only the producer's retention expires the
    meta, and a run is listed only after its meta exists). If no consumer looked while the meta
    was there (all were down, or the retention was shorter than the time between two passes),
    the keys the consumers wrote have no expiry yet: they get a short one now, or they would
    stay for ever once the run is forgotten."""
    run_ids = [r.decode() for r in cast(list[bytes], client.zrange(keys.runs, 0, -1))]
    if not run_ids:
        return 0
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hmget(keys.home.run(run_id).meta, ["state", "retention_s", "partitions"])
    metas = pipe.execute()
    gone = [run_id for run_id, (state, _, _) in zip(run_ids, metas, strict=True)
            if state is None]
    for run_id, (state, retention, parts) in zip(run_ids, metas, strict=True):
        if state is None or state.decode() not in FINAL_STATES or retention is None:
            continue
        for part in partitions_of(keys, parts):
            rk = part.run(run_id)
            for name in RUN_KEY_SUFFIXES:
                if name not in PRODUCER_WRITES:
                    pipe.expire(getattr(rk, name), int(retention), nx=True)
    for run_id in gone:
        # The meta, and with it the list of partitions, is gone: the untagged keys are all
        # that can be found here (on a cluster the partitions' keys were given their expiry
        # when the run finished).
        rk = keys.home.run(run_id)
        for name in RUN_KEY_SUFFIXES:
            if name not in PRODUCER_WRITES:
                pipe.expire(getattr(rk, name), 1)
    if gone:
        pipe.zrem(keys.runs, *gone)
    pipe.execute()
    return len(gone)


@dataclass(frozen=True)
class Progress:
    committed: int
    dead_lettered: int
    queue_depth: int
    sum: int = 0  # the committed sum so far

    @property
    def resolved(self) -> int:
        return self.committed + self.dead_lettered


def read_progress(client: redis.Redis, keys: Keys, run_id: str,
                  queue_key: str | None = None) -> Progress:
    """Where a run stands; ``queue_key`` is the queue it travels by (default: the native one,
    summed over the run's partitions on a Redis Cluster)."""
    parts = run_partitions(client, keys, run_id)
    if parts[0].tag is not None:
        # A partitioned run (Redis Cluster, native transport only): its queues are the
        # partitions' own, not the one a single Redis would have.
        queue_key = None
    pipe = client.pipeline(transaction=False)
    for part in parts:
        rk = part.run(run_id)
        pipe.get(rk.committed)
        pipe.get(rk.dead_items)
        pipe.get(rk.sum)
        if queue_key is None:
            pipe.llen(part.queue)
    if queue_key is not None:
        pipe.llen(queue_key)
    replies = pipe.execute()
    step = 3 if queue_key is not None else 4
    committed = sum(int(r or 0) for r in replies[0:len(parts) * step:step])
    dead = sum(int(r or 0) for r in replies[1:len(parts) * step:step])
    total = sum(int(r or 0) for r in replies[2:len(parts) * step:step])
    depth = int(replies[-1]) if queue_key is not None else sum(
        int(r) for r in replies[3::4])
    return Progress(committed, dead, depth, total)


@dataclass
class Audit:
    run_id: str
    produced: int
    committed: int
    sum: int
    expected_sum: int
    lost: int
    duplicated: int
    pushed: int  # items whose batch is marked pushed
    pending: int  # pushed, not resolved yet: in the queue or in flight, still to be counted
    not_pushed: int  # of an incomplete run: never pushed yet, pushed when it is resumed
    dead_lettered: int
    dead_sum: int
    dropped: int
    stale_commits: int
    by_consumer: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Every item counted exactly once and the sum is the expected one."""
        return (
            not self.problems
            and self.lost == 0
            and self.duplicated == 0
            and self.dead_lettered == 0
            and self.pending == 0
            and self.not_pushed == 0
            and self.committed == self.produced
            and self.sum == self.expected_sum
        )

    @property
    def accounted(self) -> bool:
        """Nothing lost or doubled: each item is either counted once or in dead letters."""
        return (
            not self.problems
            and self.lost == 0
            and self.duplicated == 0
            and self.pending == 0
            and self.not_pushed == 0
            and self.committed + self.dead_lettered == self.produced
            and self.sum + self.dead_sum == self.expected_sum
        )

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["exact"] = self.exact
        out["accounted"] = self.accounted
        return out


def dead_letter_entry(element: bytes, reason: str, consumer: str, **facts: object) -> str:
    """A dead-letter entry as the scripts store it and the audit and ``admin`` read it: why,
    where, when, and the element itself (base64), from which its items and sum are re-read."""
    return json.dumps({"reason": reason, **facts, "consumer": consumer, "at": time.time(),
                       "element_b64": base64.b64encode(element).decode()})


def _dead_totals(entries: list[bytes]) -> tuple[int, int, list[str]]:
    """Items and exact sum of dead-lettered batches, re-read from the entries themselves."""
    items = total = 0
    problems = []
    for raw in entries:
        try:
            batch = decode(base64.b64decode(json.loads(raw)["element_b64"]))
        except (ValueError, KeyError, ForeignElement) as exc:
            problems.append(f"unreadable dead-letter entry: {exc}")
            continue
        items += batch.count
        total += batch.total
    return items, total, problems


def audit(client: redis.Redis, keys: Keys, plan: RunPlan, expected_sum: int,
          complete: bool = True) -> Audit:
    """Judge a run from the consumers' records alone.

    ``done`` has one bit per batch, set once by whichever script resolved it; the items those
    bits stand for are the items resolved at least once. The counters are added to only by the
    same scripts. So ``committed + dead_lettered - resolved`` is what was counted more than once.
    Of the items not resolved, those marked pushed are *pending* (in the queue or in flight:
    consumers will still count them), the others were never pushed. ``complete`` says whether
    the producer was told every batch was pushed: then a batch not marked pushed was *lost*
    (Redis lost an acknowledged push); otherwise the run is incomplete and a resumed producer
    pushes it.
    On a Redis Cluster each partition has its own counters and bitmaps (a batch's bits are set
    only in the partition it belongs to), and they are added up here.
    """
    parts = run_partitions(client, keys, plan.run_id)
    pipe = client.pipeline(transaction=False)
    last = max(plan.batches - 1, 0)
    for index, part in enumerate(parts):
        rk: RunKeys = part.run(plan.run_id)
        pipe.get(rk.committed)
        pipe.get(rk.sum)
        pipe.get(rk.dead_items)
        pipe.bitcount(rk.done)
        # Only the last batch's own partition can have its bit.
        pipe.getbit(rk.done, last if partition_of(last, len(parts)) == index else 0)
        pipe.bitcount(rk.pushed)
        pipe.get(rk.stale)
        pipe.hgetall(rk.by_consumer)
        pipe.lrange(rk.dead, 0, -1)
        pipe.lrange(rk.dropped, 0, -1)
        pipe.getbit(rk.pushed, last if partition_of(last, len(parts)) == index else 0)
    replies = pipe.execute()
    committed_n = total = dead_n = done_bits = pushed_bits = stale_n = 0
    last_bit = last_pushed = False
    by_consumer: dict[str, int] = {}
    dead_entries: list[bytes] = []
    dropped_entries: list[bytes] = []
    for index in range(len(parts)):
        (committed, part_sum, dead, done, last_seen, pushed, stale, consumers, dead_list,
         dropped_list, last_seen_pushed) = replies[index * 11:(index + 1) * 11]
        committed_n += int(committed or 0)
        total += int(part_sum or 0)
        dead_n += int(dead or 0)
        done_bits += int(done)
        if partition_of(last, len(parts)) == index:
            last_bit, last_pushed = bool(last_seen), bool(last_seen_pushed)
        pushed_bits += int(pushed)
        stale_n += int(stale or 0)
        for consumer, items in consumers.items():
            by_consumer[consumer.decode()] = by_consumer.get(consumer.decode(), 0) + int(items)
        dead_entries += dead_list
        dropped_entries += dropped_list
    problems: list[str] = []
    if complete and pushed_bits != plan.batches:
        problems.append(f"{pushed_bits} batches marked pushed, {plan.batches} planned")
    resolved = plan.items_in(done_bits, last_bit and plan.batches > 0)
    pushed = plan.items_in(pushed_bits, last_pushed and plan.batches > 0)
    pending = max(0, pushed - resolved)
    unpushed = max(0, plan.items - max(pushed, resolved))
    _, dead_sum, dead_problems = _dead_totals(dead_entries + dropped_entries)
    dropped_items, _, _ = _dead_totals(dropped_entries)
    return Audit(
        run_id=plan.run_id,
        produced=plan.items,
        committed=committed_n,
        sum=total,
        expected_sum=expected_sum,
        lost=unpushed if complete else 0,
        duplicated=committed_n + dead_n - resolved,
        pushed=pushed,
        pending=pending,
        not_pushed=0 if complete else unpushed,
        dead_lettered=dead_n,
        dead_sum=dead_sum,
        dropped=dropped_items,
        stale_commits=stale_n,
        by_consumer=by_consumer,
        problems=problems + dead_problems,
    )
