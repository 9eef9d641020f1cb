"""The chaos run over the RQ transport (``python -m chaos --transport rq``): what differs.

Where a batch is differs. With RQ, a batch's numbers wait in its run's ``batches`` hash from
the push until the batch is resolved (committed or dead-lettered, which HDELs the field and
sets the ``done`` bit in one script), whatever RQ does with its job meanwhile. So the snapshot
(one Lua call, atomic) reads each watched run's ``pushed`` and ``done`` bitmaps, its counters and
the field names of ``batches``, and the checker's invariants read: every pushed batch is either
unresolved (a field of ``batches``) or resolved (its ``done`` bit), never both, never neither;
items unresolved + committed + dead-lettered = items pushed; committed + dead-lettered = items
of done batches; a bit once seen set stays set. Whether an unresolved batch still has a live RQ
job is liveness, not safety: the final audit and the run finishing in its timeout check it.
The snapshot also lists RQ's started executions with whether their consumer's heartbeat is
alive, for the longest time a dead consumer's workers held jobs.

What a consumer holds differs: RQ executions in RQ's StartedJobRegistry, named by worker, where
the native transport has in-flight lists. And one fault kind more, ``rqworker``: SIGKILL of one
RQ worker process of a consumer (not the service), in the middle of a job. Recovered when the
dead worker's executions left RQ's registry (put back by ``reclaim_job.lua``); back when the
consumer service started a worker in its place.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import redis

from chaos.checker import RunState, Snapshot, SnapshotFn, bits, run_args, runs_lua
from chaos.cluster import Slot
from chaos.episodes import RQ_KINDS, SENTINEL_KINDS, Outcome
from chaos.faults import Injector
from chaos.transports import TransportView
from exactsum.counters import Event
from exactsum.keys import Keys, PoolWorkerName, RqKeys, parse_job_id
from exactsum.runs import RunPlan

# HELD: an execution in RQ's StartedJobRegistry holds a batch only while the batch is unresolved.
# A worker that dies after its commit and before RQ's own bookkeeping (a Redis kill does it)
# leaves its execution in the registry until a reclaimer sees the worker dead and removes it
# (reclaim_job.lua: nothing to put back, its batch is resolved). Such a leftover is nobody's
# claim: counted, it would make a dead consumer seem to hold jobs for that long.
# ARGV: RQ's StartedJobRegistry, the prefix of its executions' keys, the heartbeats' pattern,
# the reclaimed counter, then the runs (checker.run_args, with each run's ``batches`` hash).
# Names and ids are parsed in Python (keys.py), from what this one atomic step returns.
RQ_SNAPSHOT_LUA = (r"""
local wip = {}
for _, member in ipairs(redis.call('ZRANGE', ARGV[1], 0, -1)) do
    table.insert(wip, {member, redis.call('HGET', ARGV[2] .. member, 'worker_name') or ''})
end
local alive = redis.call('KEYS', ARGV[3])
""" + runs_lua(5, """
        redis.call('HKEYS', ARGV[i + 7]),""", extra_keys=1) + r"""
return {wip, alive, runs, redis.call('GET', ARGV[4]) or '0'}
""")


def take_rq_snapshot(client: redis.Redis, keys: Keys, run_ids: list[str], *,
                     queue: str) -> Snapshot:
    rq = RqKeys(queue)
    raw = cast(list[Any], client.eval(
        RQ_SNAPSHOT_LUA, 0, rq.started, RqKeys.execution(""), keys.heartbeat("*"),
        keys.reclaimed, *run_args(keys, run_ids, extra=("batches",))))
    wip, alive_raw, runs_raw, reclaimed = raw
    alive = {key.decode() for key in alive_raw}
    runs: dict[str, RunState] = {}
    for row in runs_raw:
        run_id, items, batch_size, pushed, done, committed, dead, total, fields = row
        name = run_id.decode()
        plan = RunPlan(name, int(items), int(batch_size)) if items and batch_size else None
        state = RunState(name, plan, bits(pushed), bits(done), int(committed), int(dead),
                         int(total), waiting="unresolved")
        unresolved = {int(f) for f in fields}
        state.queue = Counter(unresolved)
        state.queue_items = state.items_of(unresolved)
        runs[name] = state
    holders: Counter[str] = Counter()
    orphans: Counter[str] = Counter()
    for member, worker_raw in wip:
        # "<job id>:<execution id>"; only an execution whose batch is unresolved holds
        # anything (see HELD above).
        parsed = parse_job_id(keys.prefix, member.decode().rsplit(":", 1)[0])
        of_run = runs.get(parsed[0]) if parsed is not None else None
        if parsed is None or of_run is None or parsed[1] not in of_run.queue:
            continue
        worker = worker_raw.decode()
        pool_worker = PoolWorkerName.parse(worker)
        owner = pool_worker.consumer if pool_worker is not None else worker
        holders[owner] += 1
        if keys.heartbeat(owner) not in alive:
            orphans[owner] += 1
    return Snapshot(time.monotonic(), runs, 0, dict(orphans), dict(holders), int(reclaimed))


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: fields count from the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


class RqInjector(Injector):
    def __init__(self, *args: Any, queue: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rq = RqKeys(queue)

    def open_executions(self) -> dict[str, str]:
        """RQ's started executions whose batch is unresolved (HELD above): member -> worker."""
        members = []
        pipe = self.client.pipeline(transaction=False)
        for raw in cast(list[bytes], self.client.zrange(self.rq.started, 0, -1)):
            member = raw.decode()
            parsed = parse_job_id(self.keys.prefix, member.rsplit(":", 1)[0])
            if parsed is not None:
                members.append(member)
                pipe.hexists(self.keys.run(parsed[0]).batches, str(parsed[1]))
                pipe.hget(RqKeys.execution(member), "worker_name")
        replies = pipe.execute()
        return {member: (replies[2 * i + 1] or b"").decode()
                for i, member in enumerate(members) if replies[2 * i]}

    def executions(self, consumer_id: str) -> dict[str, str]:
        """The open executions of this consumer's workers: member -> worker name."""
        found = {}
        for member, worker in self.open_executions().items():
            name = PoolWorkerName.parse(worker)
            if name is not None and name.consumer == consumer_id:
                found[member] = worker
        return found

    def holds(self, consumer_id: str) -> int:
        return len(self.executions(consumer_id))

    def claims(self, consumer_id: str) -> frozenset[str]:
        return frozenset(self.executions(consumer_id))

    def released(self, consumer_id: str, claims: frozenset[str]) -> bool:
        # A stopped service's workers still run and take new jobs, which the others put back
        # in turn: what counts is that the executions it held when it went away were put back.
        return not claims & set(self.open_executions())

    def _rqworker(self, outcome: Outcome, slot: Slot) -> None:
        """SIGKILL one RQ worker process of the consumer while it runs a job."""
        gen = slot.current
        outcome.victim = f"{slot.name} {gen.consumer_id}"
        self._wait_holding(gen)
        target: tuple[str, int, frozenset[str]] | None = None

        def pick() -> bool:
            nonlocal target
            by_worker: dict[str, set[str]] = {}
            for member, worker in self.executions(gen.consumer_id).items():
                by_worker.setdefault(worker, set()).add(member)
            for worker in sorted(by_worker)[int(outcome.episode.pick * len(by_worker)):]:
                pid = int(cast(bytes, self.client.hget(RqKeys.worker(worker), "pid")) or 0)
                # Only a child of the victim's service is ever signalled.
                if pid and _parent_pid(pid) == gen.popen.pid:
                    target = (worker, pid, frozenset(by_worker[worker]))
                    return True
            return False

        if self._poll(pick, 10.0) is None or target is None:
            outcome.notes.append("found no RQ worker of it running a job")
            return
        worker, pid, members = target
        gens = [s.current for s in self.cluster.slots]
        put_back_before = sum(g.counter(Event.RQ_JOBS_PUT_BACK) for g in gens)
        started_before = gen.counter(Event.RQ_WORKER_STARTED)
        killed = time.monotonic()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            outcome.notes.append(f"worker {worker} (pid {pid}) had exited already")
            return
        outcome.notes.append(f"killed {worker} (pid {pid}) holding {len(members)}")
        gone = self._poll(lambda: self.released(gen.consumer_id, members),
                          self.reclaim_deadline)
        if gone is None:
            outcome.failure = f"the jobs of the dead worker {worker} were not put back"
            return
        outcome.recover_s = time.monotonic() - killed
        # Landed if the worker died holding a job: one consumer put a job back (episodes run
        # one at a time: no other worker died meanwhile).
        outcome.landed = self._poll(
            lambda: sum(g.counter(Event.RQ_JOBS_PUT_BACK) for g in gens) > put_back_before,
            5.0) is not None
        # Its consumer starts a worker in its place (the slot's next start).
        if self._poll(lambda: gen.counter(Event.RQ_WORKER_STARTED) > started_before,
                      30.0) is None:
            if gen.popen.poll() is None:
                outcome.failure = f"no RQ worker started in place of {worker} within 30 s"
        else:
            outcome.back_s = time.monotonic() - killed


class RqView(TransportView):
    """Chaos over the RQ transport (``--transport rq``): RQ worker kills too, also over
    Sentinel (``--redis sentinel``, with failovers)."""

    kinds = RQ_KINDS
    sentinel_kinds = (*SENTINEL_KINDS, "rqworker")
    reclaimed_words = "jobs of dead workers put back on RQ's queue by reclaim_job.lua"
    retried_words = "RQ retried the job"
    commit_script = "commit_job.lua"

    def consumer_args(self, args: argparse.Namespace) -> list[str]:
        return ["--transport", self.name, "--rq-queue", args.rq_queue]

    def producer_args(self, args: argparse.Namespace) -> list[str]:
        # Reclaims of dead workers' jobs spend RQ retries too, as flaky failures do: as many
        # as the native consumers' attempts, so that no batch is dead-lettered.
        return ["--transport", self.name, "--rq-queue", args.rq_queue, "--rq-retries",
                str(max(0, args.max_attempts - 1))]

    def snapshot(self, args: argparse.Namespace) -> SnapshotFn:
        return functools.partial(take_rq_snapshot, queue=args.rq_queue)

    def injector(self, args: argparse.Namespace, *injector_args: Any,
                 **injector_kwargs: Any) -> Injector:
        return RqInjector(*injector_args, queue=args.rq_queue, **injector_kwargs)


VIEW = RqView("rq")
