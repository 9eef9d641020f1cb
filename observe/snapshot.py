"""One look at everything Redis knows about the work: what `status` prints and the dashboard shows.

The look is taken in two steps. The first finds what exists: the latest runs and their fixed
plan (items, batch size), the consumers in the registry, and the in-flight lists: those SCAN
finds (as the reclaimer does) and every thread's list of every registered consumer, since an
empty list does not exist in Redis and a thread's list comes and goes with each claim. The
second reads every figure that moves in one MULTI/EXEC, so the figures agree with each other: a
run's sum, its committed count and its per-consumer counts are written by the same script, and
a snapshot never shows one without the others. A finished run
is also judged by :func:`exactsum.runs.audit`, the producer's own audit.

It needs only read access (the ``observer`` user of :mod:`exactsum_admin.acl`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis

from exactsum.keys import Keys, RqKeys
from exactsum.protocol import element_items
from exactsum.runs import FINAL_STATES, RunPlan, audit

RECENT_DEAD = 3  # newest dead letters shown per list


@dataclass
class RunView:
    run_id: str
    state: str  # pushing, pushed, verified, unverified, dead-lettered
    started_ms: int
    items: int
    batch_size: int
    pushed: int  # items on the queue so far (each batch once)
    committed: int
    dead_lettered: int
    sum: int
    expected_sum: int | None  # known once the producer has pushed everything
    stale_commits: int
    by_consumer: dict[str, int]
    audit: dict[str, Any] | None = None  # the audit of a finished run
    transport: str = "native"  # or "rq": its batches travel as RQ jobs (rq-dashboard shows them)

    @property
    def resolved(self) -> int:
        return self.committed + self.dead_lettered

    @property
    def outstanding(self) -> int:
        """Pushed and not resolved yet: in the queue or in flight."""
        return self.pushed - self.resolved

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(resolved=self.resolved, outstanding=self.outstanding, finished=self.finished)
        return out


@dataclass
class ConsumerView:
    consumer_id: str
    alive: bool  # its heartbeat key exists
    last_heartbeat_ms: int | None
    heartbeat_ttl_ms: int | None
    host: str | None = None
    pid: int | None = None
    threads: int | None = None
    started: float | None = None
    committed: int | None = None  # items since it started, as of its last heartbeat
    rate: float | None = None  # items/s over its last heartbeat interval
    inflight_batches: int = 0
    inflight_items: int = 0


@dataclass
class Snapshot:
    at: float
    prefix: str
    queue_depth: int  # batches (queue elements)
    reclaimed: int  # elements moved back from dead consumers, ever
    foreign_dead: int  # dead letters of no run (pc:dead)
    consumers: list[ConsumerView]
    runs: list[RunView]
    recent_dead: list[dict[str, Any]] = field(default_factory=list)
    # Jobs waiting on the RQ queue of each RQ-transport run shown (name -> jobs).
    rq_queues: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at, "prefix": self.prefix, "queue_depth": self.queue_depth,
            "rq_queues": self.rq_queues,
            "inflight_batches": sum(c.inflight_batches for c in self.consumers),
            "inflight_items": sum(c.inflight_items for c in self.consumers),
            "reclaimed": self.reclaimed, "foreign_dead": self.foreign_dead,
            "consumers": [asdict(c) for c in self.consumers],
            "runs": [r.as_dict() for r in self.runs],
            "recent_dead": self.recent_dead,
        }


def _int(raw: Any) -> int:
    return int(raw) if raw is not None else 0


def _text(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def _dead_entry(raw: bytes, run_id: str | None) -> dict[str, Any]:
    try:
        entry = cast(dict[str, Any], json.loads(raw))
    except ValueError:
        return {"run": run_id, "reason": "unreadable entry"}
    entry.pop("element_b64", None)
    entry.setdefault("run", run_id)
    return entry


def take(client: redis.Redis, keys: Keys, runs: int = 10) -> Snapshot:
    """The latest ``runs`` runs, every registered consumer, the queue and the faults."""
    # Step 1: what exists, and the runs' fixed plans.
    run_ids = [r.decode() for r in cast(list[bytes], client.zrevrange(keys.runs, 0, runs - 1))]
    registered = cast(list[tuple[bytes, float]],
                      client.zrange(keys.consumers, 0, -1, withscores=True))
    lists = sorted(k.decode() for k in client.scan_iter(match=keys.inflight_pattern, count=1000,
                                                        _type="list"))
    seen = {c.decode(): int(score) for c, score in registered}
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hmget(keys.run(run_id).meta, ["items", "batch_size", "batches", "rq_queue"])
    for consumer_id in seen:
        pipe.get(keys.heartbeat(consumer_id))
    found = pipe.execute()
    plans = {run_id: (int(m[0]), int(m[1]), int(m[2]))
             for run_id, m in zip(run_ids, found[:len(run_ids)], strict=True)
             if None not in m[:3]}
    rq_queues = sorted({m[3].decode() for m in found[:len(run_ids)] if m[3] is not None})
    for consumer_id, info in zip(seen, found[len(run_ids):], strict=True):
        threads = int(json.loads(info).get("threads", 0)) if info is not None else 0
        lists += [keys.inflight(consumer_id, n) for n in range(threads)]
    lists = sorted(set(lists))
    owners = {keys.inflight_owner(key) for key in lists}
    consumer_ids = sorted(seen.keys() | owners)

    # Step 2: every moving figure at one instant.
    pipe = client.pipeline(transaction=True)
    for name in rq_queues:
        pipe.llen(RqKeys(name).queue)
    pipe.llen(keys.queue)
    pipe.get(keys.reclaimed)
    pipe.llen(keys.dead)
    pipe.lrange(keys.dead, -RECENT_DEAD, -1)
    for consumer_id in consumer_ids:
        pipe.get(keys.heartbeat(consumer_id))
        pipe.pttl(keys.heartbeat(consumer_id))
    for key in lists:
        pipe.lrange(key, 0, -1)
    live_runs = [run_id for run_id in run_ids if run_id in plans]
    for run_id in live_runs:
        rk = keys.run(run_id)
        pipe.hgetall(rk.meta)
        pipe.bitcount(rk.pushed)
        pipe.getbit(rk.pushed, max(plans[run_id][2] - 1, 0))
        pipe.get(rk.committed)
        pipe.get(rk.dead_items)
        pipe.get(rk.sum)
        pipe.get(rk.stale)
        pipe.hgetall(rk.by_consumer)
        pipe.lrange(rk.dead, -RECENT_DEAD, -1)
    replies = iter(pipe.execute())
    at = time.time()
    rq_depths = {name: _int(next(replies)) for name in rq_queues}
    depth, reclaimed, foreign = _int(next(replies)), _int(next(replies)), _int(next(replies))
    recent = [_dead_entry(raw, None) for raw in next(replies)]

    consumers = {}
    for consumer_id in consumer_ids:
        info_raw, pttl = next(replies), int(next(replies))
        view = ConsumerView(consumer_id, alive=info_raw is not None,
                            last_heartbeat_ms=seen.get(consumer_id),
                            heartbeat_ttl_ms=pttl if pttl >= 0 else None)
        if info_raw is not None:
            info = json.loads(info_raw)
            for name in ("host", "pid", "threads", "started", "committed", "rate"):
                setattr(view, name, info.get(name))
        consumers[consumer_id] = view
    for key in lists:
        held = cast(list[bytes], next(replies))
        view = consumers[keys.inflight_owner(key)]
        view.inflight_batches += len(held)
        view.inflight_items += sum(map(element_items, held))

    run_views = []
    for run_id in live_runs:
        items, batch_size, batches = plans[run_id]
        (meta_raw, pushed_bits, last_pushed, committed, dead, total, stale, by_consumer,
         dead_raw) = (next(replies) for _ in range(9))
        meta = _text(meta_raw)
        plan = RunPlan(run_id, items, batch_size)
        expected = meta.get("expected_sum")
        run_views.append(RunView(
            run_id=run_id, state=meta.get("state", "unknown"),
            started_ms=int(meta.get("started_ms", 0)), items=items, batch_size=batch_size,
            pushed=plan.items_in(int(pushed_bits), bool(last_pushed) and batches > 0),
            committed=_int(committed), dead_lettered=_int(dead), sum=_int(total),
            expected_sum=int(expected) if expected is not None else None,
            stale_commits=_int(stale),
            by_consumer={k: int(v) for k, v in _text(by_consumer).items()},
            transport=meta.get("transport", "native"),
        ))
        recent += [_dead_entry(raw, run_id) for raw in dead_raw]
    for run in run_views:
        if run.finished and run.expected_sum is not None:
            plan = RunPlan(run.run_id, run.items, run.batch_size)
            run.audit = audit(client, keys, plan, run.expected_sum).as_dict()
    recent.sort(key=lambda entry: float(entry.get("at") or 0), reverse=True)
    return Snapshot(at=at, prefix=keys.prefix, queue_depth=depth, reclaimed=reclaimed,
                    foreign_dead=foreign, consumers=list(consumers.values()), runs=run_views,
                    recent_dead=recent[:10], rq_queues=rq_depths)
