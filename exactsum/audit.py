"""A run's progress and its audit, read from what the consumers' scripts wrote.

The audit compares the consumers' records with what the producer says it pushed; it is shared
by the producer's report, ``exactsum_admin``, status and the dashboard, and the chaos checker.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass, field

import redis

from exactsum.keys import Keys, RunKeys, partition_of
from exactsum.protocol import ForeignElement, decode
from exactsum.runs import RunPlan, run_partitions


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
