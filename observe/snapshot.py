"""One look at everything Redis knows about the work: what `status` prints and the dashboard shows.

The look is taken in two steps. The first finds what exists: the latest runs and their fixed
plan (items, batch size), the consumers in the registry, and the in-flight lists: those SCAN
finds (as the reclaimer does) and every thread's list of every registered consumer, since an
empty list does not exist in Redis and a thread's list comes and goes with each claim. The
second reads every figure that moves in one MULTI/EXEC, so the figures agree with each other: a
run's sum, its committed count and its per-consumer counts are written by the same script, and
a snapshot never shows one without the others. A finished run
is also judged by :func:`exactsum.audit.audit`, the producer's own audit.

It needs only read access (the ``observer`` user of :mod:`exactsum_admin.acl`). On a Redis
Cluster it adds up the partitions of each run (docs/cluster.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis

from exactsum import transport
from exactsum.audit import audit
from exactsum.cluster import is_cluster
from exactsum.keys import Keys, partition_of
from exactsum.protocol import element_items
from exactsum.runs import FINAL_STATES, RunPlan, partitions_of

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
    """The latest ``runs`` runs, every registered consumer, the queue and the faults.

    On a Redis Cluster (a ``RedisCluster`` client) the figures of every partition are added up;
    the second step is then a plain pipeline, one per primary, instead of MULTI/EXEC (a
    transaction cannot span slots), so figures of different partitions may be a moment apart.
    """
    cluster = is_cluster(client)
    # Step 1: what exists, and the runs' fixed plans.
    run_ids = [r.decode() for r in cast(list[bytes], client.zrevrange(keys.runs, 0, runs - 1))]
    registered = cast(list[tuple[bytes, float]],
                      client.zrange(keys.consumers, 0, -1, withscores=True))
    parts = [keys]
    if cluster:
        parts = [keys.partition(t.decode())
                 for t in sorted(cast(set[bytes], client.smembers(keys.partitions)))]
    pattern = keys.partitioned_inflight_pattern if cluster else keys.inflight_pattern
    lists = sorted(k.decode() for k in client.scan_iter(match=pattern, count=1000,
                                                        _type="list"))
    seen = {c.decode(): int(score) for c, score in registered}
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hgetall(keys.run(run_id).meta)
    for consumer_id in seen:
        pipe.get(keys.heartbeat(consumer_id))
    found = pipe.execute()
    metas = [cast(dict[bytes, bytes], m) for m in found[:len(run_ids)]]
    plans = {run_id: (int(m[b"items"]), int(m[b"batch_size"]), int(m[b"batches"]))
             for run_id, m in zip(run_ids, metas, strict=True)
             if all(f in m for f in (b"items", b"batch_size", b"batches"))}
    run_parts = {run_id: partitions_of(keys, m.get(b"partitions"))
                 for run_id, m in zip(run_ids, metas, strict=True)}
    own_queues = transports_own_queues(keys, metas)
    for consumer_id, info in zip(seen, found[len(run_ids):], strict=True):
        threads = int(json.loads(info).get("threads", 0)) if info is not None else 0
        lists += [part.inflight(consumer_id, n) for part in parts for n in range(threads)]
    lists = sorted(set(lists))
    owners = {keys.partition_of_key(key).inflight_owner(key) for key in lists}
    consumer_ids = sorted(seen.keys() | owners)

    # Step 2: every moving figure at one instant (on one Redis).
    pipe = client.pipeline(transaction=not cluster)
    for name in sorted(own_queues):
        pipe.llen(own_queues[name])
    for part in parts:
        pipe.llen(part.queue)
        pipe.get(part.reclaimed)
        pipe.llen(part.dead)
        pipe.lrange(part.dead, -RECENT_DEAD, -1)
    for consumer_id in consumer_ids:
        pipe.get(keys.heartbeat(consumer_id))
        pipe.pttl(keys.heartbeat(consumer_id))
    for key in lists:
        pipe.lrange(key, 0, -1)
    live_runs = [run_id for run_id in run_ids if run_id in plans]
    for run_id in live_runs:
        pipe.hgetall(keys.run(run_id).meta)
        last = max(plans[run_id][2] - 1, 0)
        for index, part in enumerate(run_parts[run_id]):
            rk = part.run(run_id)
            pipe.bitcount(rk.pushed)
            # Only the last batch's own partition can have its bit.
            pipe.getbit(rk.pushed, last if partition_of(last, len(run_parts[run_id])) == index
                        else 0)
            pipe.get(rk.committed)
            pipe.get(rk.dead_items)
            pipe.get(rk.sum)
            pipe.get(rk.stale)
            pipe.hgetall(rk.by_consumer)
            pipe.lrange(rk.dead, -RECENT_DEAD, -1)
    replies = iter(pipe.execute())
    at = time.time()
    rq_depths = {name: _int(next(replies)) for name in sorted(own_queues)}
    depth = reclaimed = foreign = 0
    recent: list[dict[str, Any]] = []
    for _ in parts:
        depth += _int(next(replies))
        reclaimed += _int(next(replies))
        foreign += _int(next(replies))
        recent += [_dead_entry(raw, None) for raw in next(replies)]

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
        view = consumers[keys.partition_of_key(key).inflight_owner(key)]
        view.inflight_batches += len(held)
        view.inflight_items += sum(map(element_items, held))

    run_views = []
    for run_id in live_runs:
        items, batch_size, batches = plans[run_id]
        meta = _text(next(replies))
        pushed_bits = committed = dead = total = stale = 0
        last_pushed = False
        by_consumer: dict[str, int] = {}
        for _ in run_parts[run_id]:
            (bits, last_bit, part_committed, part_dead, part_sum, part_stale, part_consumers,
             dead_raw) = (next(replies) for _ in range(8))
            pushed_bits += int(bits)
            last_pushed = last_pushed or bool(last_bit)
            committed += _int(part_committed)
            dead += _int(part_dead)
            total += _int(part_sum)
            stale += _int(part_stale)
            for consumer, count in _text(part_consumers).items():
                by_consumer[consumer] = by_consumer.get(consumer, 0) + int(count)
            recent += [_dead_entry(raw, run_id) for raw in dead_raw]
        plan = RunPlan(run_id, items, batch_size)
        expected = meta.get("expected_sum")
        run_views.append(RunView(
            run_id=run_id, state=meta.get("state", "unknown"),
            started_ms=int(meta.get("started_ms", 0)), items=items, batch_size=batch_size,
            pushed=plan.items_in(pushed_bits, last_pushed and batches > 0),
            committed=committed, dead_lettered=dead, sum=total,
            expected_sum=int(expected) if expected is not None else None,
            stale_commits=stale, by_consumer=by_consumer,
            transport=meta.get("transport", "native"),
        ))
    for run in run_views:
        if run.finished and run.expected_sum is not None:
            plan = RunPlan(run.run_id, run.items, run.batch_size)
            run.audit = audit(client, keys, plan, run.expected_sum).as_dict()
    recent.sort(key=lambda entry: float(entry.get("at") or 0), reverse=True)
    return Snapshot(at=at, prefix=keys.prefix, queue_depth=depth, reclaimed=reclaimed,
                    foreign_dead=foreign, consumers=list(consumers.values()), runs=run_views,
                    recent_dead=recent[:10], rq_queues=rq_depths)


def transports_own_queues(keys: Keys, metas: list[dict[bytes, bytes]]) -> dict[str, str]:
    """Queue name -> Redis list, of the runs' queues that are their transport's own (RQ's named
    queues), asked of each run's transport: observe names none."""
    queues: dict[str, str] = {}
    for meta in metas:
        name = meta.get(b"transport", transport.DEFAULT.encode()).decode()
        if name not in transport.names():
            continue  # a run of a transport this install does not have
        found = transport.get(name).own_queue(keys, meta)
        if found is not None:
            queues[found[0]] = found[1]
    return queues
