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

from exactsum.keys import RUN_KEY_SUFFIXES, Keys, RunKeys
from exactsum.protocol import ForeignElement, decode


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


def create_run(client: redis.Redis, keys: Keys, plan: RunPlan, producer: str,
               transport: str = "native", **transport_facts: str | int) -> None:
    """Record the plan. Refuses a run id that already exists, so two runs never share a sum.

    ``producer`` must be unique to this producer process: a call re-sent after a lost reply
    finds its own name in the meta and goes on, where another producer's run is refused.
    ``transport_facts`` are what the transport needs to know of the run later (the RQ queue and
    job options: :meth:`exactsum.transport.rq.jobs.JobOptions.as_meta`).
    The expected sum of a random run is known only when its last batch is made; it is written
    then, by :func:`set_state`.
    """
    rk = keys.run(plan.run_id)
    now_ms = int(time.time() * 1000)
    if not client.hsetnx(rk.meta, "producer", producer) and (
        client.hget(rk.meta, "producer") != producer.encode()
    ):
        raise ValueError(f"run id {plan.run_id!r} already exists; pick another --run-id")
    mapping: dict[str, str | int] = {
        "batch_size": plan.batch_size,
        "batches": plan.batches,
        "state": "pushing",
        "items": plan.items,
        "started_ms": now_ms,
        "transport": transport,
        **transport_facts,
    }
    client.hset(rk.meta, mapping=mapping)  # type: ignore[arg-type]
    client.zadd(keys.runs, {plan.run_id: now_ms})


def set_state(
    client: redis.Redis, keys: Keys, run_id: str, state: str, **fields: int | str
) -> None:
    mapping = {"state": state, f"{state}_ms": int(time.time() * 1000), **fields}
    client.hset(keys.run(run_id).meta, mapping=mapping)  # type: ignore[arg-type]


FINAL_STATES = frozenset({"verified", "unverified", "dead-lettered"})
# Each side expires the keys it writes, so neither needs write access to the other's keys
# (with the ACL users of exactsum_admin.acl, the producer cannot touch a sum, not even its TTL).
PRODUCER_WRITES = ("meta", "pushed", "batches")


def expire_run(client: redis.Redis, keys: Keys, run_id: str, retention_s: int) -> None:
    """The producer's part of retention: its own keys go after ``retention_s`` seconds. The
    consumers expire the rest when they see the run finished (:func:`expire_finished_runs`)."""
    rk = keys.run(run_id)
    pipe = client.pipeline(transaction=False)
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
        pipe.hmget(keys.run(run_id).meta, ["state", "retention_s"])
    metas = pipe.execute()
    gone = [run_id for run_id, (state, _) in zip(run_ids, metas, strict=True) if state is None]
    for run_id, (state, retention) in zip(run_ids, metas, strict=True):
        if state is None or state.decode() not in FINAL_STATES or retention is None:
            continue
        rk = keys.run(run_id)
        for name in RUN_KEY_SUFFIXES:
            if name not in PRODUCER_WRITES:
                pipe.expire(getattr(rk, name), int(retention), nx=True)
    for run_id in gone:
        rk = keys.run(run_id)
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

    @property
    def resolved(self) -> int:
        return self.committed + self.dead_lettered


def read_progress(client: redis.Redis, keys: Keys, run_id: str,
                  queue_key: str | None = None) -> Progress:
    """Where a run stands; ``queue_key`` is the queue it travels by (default: the native one)."""
    rk = keys.run(run_id)
    pipe = client.pipeline(transaction=False)
    pipe.get(rk.committed)
    pipe.get(rk.dead_items)
    pipe.llen(queue_key or keys.queue)
    committed, dead, depth = pipe.execute()
    return Progress(int(committed or 0), int(dead or 0), int(depth))


@dataclass
class Audit:
    run_id: str
    produced: int
    committed: int
    sum: int
    expected_sum: int
    lost: int
    duplicated: int
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


def audit(client: redis.Redis, keys: Keys, plan: RunPlan, expected_sum: int) -> Audit:
    """Judge a run from the consumers' records alone.

    ``done`` has one bit per batch, set once by whichever script resolved it; the items those
    bits stand for are the items resolved at least once. The counters are added to only by the
    same scripts. So ``committed + dead_lettered - resolved`` is what was counted more than once,
    and ``produced - resolved`` is what nobody resolved.
    """
    rk: RunKeys = keys.run(plan.run_id)
    pipe = client.pipeline(transaction=False)
    pipe.get(rk.committed)
    pipe.get(rk.sum)
    pipe.get(rk.dead_items)
    pipe.bitcount(rk.done)
    pipe.getbit(rk.done, max(plan.batches - 1, 0))
    pipe.bitcount(rk.pushed)
    pipe.get(rk.stale)
    pipe.hgetall(rk.by_consumer)
    pipe.lrange(rk.dead, 0, -1)
    pipe.lrange(rk.dropped, 0, -1)
    (committed, total, dead, done_bits, last_bit, pushed_bits, stale, by_consumer, dead_entries,
     dropped_entries) = pipe.execute()
    problems: list[str] = []
    if pushed_bits != plan.batches:
        problems.append(f"{pushed_bits} batches marked pushed, {plan.batches} planned")
    resolved = plan.items_in(int(done_bits), bool(last_bit) and plan.batches > 0)
    committed_n, dead_n = int(committed or 0), int(dead or 0)
    _, dead_sum, dead_problems = _dead_totals(dead_entries + dropped_entries)
    dropped_items, _, _ = _dead_totals(dropped_entries)
    return Audit(
        run_id=plan.run_id,
        produced=plan.items,
        committed=committed_n,
        sum=int(total or 0),
        expected_sum=expected_sum,
        lost=plan.items - resolved,
        duplicated=committed_n + dead_n - resolved,
        dead_lettered=dead_n,
        dead_sum=dead_sum,
        dropped=dropped_items,
        stale_commits=int(stale or 0),
        by_consumer={k.decode(): int(v) for k, v in by_consumer.items()},
        problems=problems + dead_problems,
    )
