"""The conservation checker: atomic snapshots of where every batch of a run is.

One snapshot is one Lua call (so Redis runs it as one atomic step): the queue, every in-flight
list with whether its owner's heartbeat is alive, and each watched run's ``pushed`` and ``done``
bitmaps and counters. Only the element headers come back, not the values.

From a snapshot, for each run:

- **identity**: every batch marked pushed is in exactly one place: the queue, one in-flight
  list, or ``done`` (committed or dead-lettered). A batch found in no place is lost, one found
  in two places could be counted twice, and a batch found anywhere without its pushed bit is
  an element nobody produced;
- **conservation**: items in the queue + in flight + committed + dead-lettered = items pushed
  (items pushed so far, from the pushed bitmap and the batch size: that is what "produced"
  means mid-run);
- **no double count**: committed + dead-lettered = the items of the batches marked done;
- **durability**: a pushed or done bit, once seen, is never seen unset again (a Redis restart
  must not lose an acknowledged write).

The state in Redis is changed only by atomic scripts and atomic moves, so in principle every
snapshot satisfies all four. A violation is recorded with when it was first seen; one that is
still there after ``window`` seconds (the reclaim window: heartbeat TTL plus reclaim interval
plus a margin) fails the run. Transient ones are counted and reported, not ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from exactsum.keys import Keys
from exactsum.protocol import HEADER_MAX, read_header
from exactsum.runs import RunPlan

log = logging.getLogger("chaos.checker")


# The keys of a run whose figures a snapshot reads, in the order ``runs_lua`` reads them.
RUN_FIGURES = ("meta", "pushed", "done", "committed", "dead_items", "sum")


def run_args(keys: Keys, run_ids: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    """For ``runs_lua``: each run's id, then the names of its keys ``RUN_FIGURES`` + ``extra``
    (names from keys.py, never built in Lua)."""
    out: list[str] = []
    for run_id in run_ids:
        rk = keys.run(run_id)
        out += [run_id, *(getattr(rk, name) for name in RUN_FIGURES + extra)]
    return out


def runs_lua(first_arg: int, extra: str = "", extra_keys: int = 0) -> str:
    """Lua that reads the figures of each watched run into a table ``runs``, from ARGV[first_arg:]
    as :func:`run_args` lays them out; ``extra`` adds more values per run, reading the keys after
    the figures' (``ARGV[i + 7]`` on). Shared by both transports' snapshots."""
    stride = 1 + len(RUN_FIGURES) + extra_keys
    return f"""
local runs = {{}}
for i = {first_arg}, #ARGV, {stride} do
    table.insert(runs, {{
        ARGV[i],
        redis.call('HGET', ARGV[i + 1], 'items') or '',
        redis.call('HGET', ARGV[i + 1], 'batch_size') or '',
        redis.call('GET', ARGV[i + 2]) or '',
        redis.call('GET', ARGV[i + 3]) or '',
        redis.call('GET', ARGV[i + 4]) or '0',
        redis.call('GET', ARGV[i + 5]) or '0',
        redis.call('GET', ARGV[i + 6]) or '0',{extra}
    }})
end
"""


# ARGV: the queue, the in-flight lists' pattern, the heartbeats' pattern, the reclaimed counter,
# how many bytes of an element its header needs at most, then the runs (run_args). Only element
# headers come back (protocol.read_header parses them), and the heartbeats alive at that moment.
SNAPSHOT_LUA = (r"""
local n = tonumber(ARGV[5])
local function heads(list)
    local out = {}
    for i, e in ipairs(list) do
        out[i] = string.sub(e, 1, n)
    end
    return out
end
local queue = heads(redis.call('LRANGE', ARGV[1], 0, -1))
local inflight = {}
for _, key in ipairs(redis.call('KEYS', ARGV[2])) do
    table.insert(inflight, {key, heads(redis.call('LRANGE', key, 0, -1))})
end
local alive = redis.call('KEYS', ARGV[3])
""" + runs_lua(6) + r"""
return {queue, inflight, alive, runs, redis.call('GET', ARGV[4]) or '0'}
""")


def bits(bitmap: bytes) -> set[int]:
    """Offsets of the set bits of a Redis bitmap (offset 0 is the high bit of byte 0)."""
    out: set[int] = set()
    for i, byte in enumerate(bitmap):
        if byte:
            for j in range(8):
                if byte & (0x80 >> j):
                    out.add(i * 8 + j)
    return out


@dataclass
class RunState:
    run_id: str
    plan: RunPlan | None
    pushed: set[int]
    done: set[int]
    committed: int
    dead_items: int
    sum: int
    queue: Counter[int] = field(default_factory=Counter)
    inflight: Counter[int] = field(default_factory=Counter)
    queue_items: int = 0
    inflight_items: int = 0
    # "queue" for the native transport; for RQ's (chaos.rqview) the batches not yet resolved,
    # the fields of the run's ``batches`` hash, stand where the queue does, and nothing is in
    # flight: an RQ job carries no numbers, so where its job is does not decide a batch's fate.
    waiting: str = "queue"
    # On a Redis Cluster (chaos.clusterview) the run's partitions, each read atomically on its
    # primary, by tag; the run's own figures are their sums, which are not one atomic read. The
    # invariants are checked on each partition (a batch lives in one partition only).
    parts: dict[str, RunState] = field(default_factory=dict)

    def items_of(self, seqs: set[int]) -> int:
        if self.plan is None:
            return 0
        last = self.plan.batches - 1
        return self.plan.items_in(len(seqs), last in seqs)

    @property
    def pushed_items(self) -> int:
        return self.items_of(self.pushed)

    @property
    def done_items(self) -> int:
        return self.items_of(self.done)


@dataclass
class Snapshot:
    at: float
    runs: dict[str, RunState]
    foreign: int  # elements that are no batch of a watched run
    orphans: dict[str, int]  # owner without heartbeat -> elements it still holds
    holders: dict[str, int]  # every owner -> elements it holds
    reclaimed: int
    # On a cluster, partitions that could not be read (or whose read no replica confirmed)
    # this time: a partial snapshot, checked on the partitions that were read.
    unread: tuple[str, ...] = ()


def snapshot_args(keys: Keys, run_ids: list[str]) -> list[str | int]:
    """ARGV of ``SNAPSHOT_LUA`` for the queue and in-flight lists under ``keys`` (one partition,
    on a cluster) and the runs' keys there."""
    return [keys.queue, keys.inflight_pattern, keys.heartbeat("*"), keys.reclaimed, HEADER_MAX,
            *run_args(keys, run_ids)]


def take_snapshot(client: redis.Redis, keys: Keys, run_ids: list[str]) -> Snapshot:
    return parse_snapshot(client.eval(SNAPSHOT_LUA, 0, *snapshot_args(keys, run_ids)), keys)


def parse_snapshot(reply: object, keys: Keys) -> Snapshot:
    """The :class:`Snapshot` in the reply of ``SNAPSHOT_LUA`` (run with ``snapshot_args``)."""
    queue_heads, inflight_raw, alive_raw, runs_raw, reclaimed = cast(list[Any], reply)
    alive = {key.decode() for key in alive_raw}
    runs: dict[str, RunState] = {}
    for row in runs_raw:
        run_id, items, batch_size, pushed, done, committed, dead, total = row
        plan = None
        if items and batch_size:
            plan = RunPlan(run_id.decode(), int(items), int(batch_size))
        runs[run_id.decode()] = RunState(run_id.decode(), plan, bits(pushed), bits(done),
                                         int(committed), int(dead), int(total))
    foreign = 0

    def place(head: bytes, into_queue: bool) -> None:
        nonlocal foreign
        header = read_header(head)
        state = runs.get(header.run_id) if header is not None else None
        if header is None or state is None:
            foreign += 1
            return
        seq, count = header.seq, header.count
        if into_queue:
            state.queue[seq] += 1
            state.queue_items += count
        else:
            state.inflight[seq] += 1
            state.inflight_items += count

    for head in queue_heads:
        place(head, True)
    orphans: Counter[str] = Counter()
    holders: Counter[str] = Counter()
    for key, heads in inflight_raw:
        owner = keys.inflight_owner(key.decode())
        holders[owner] += len(heads)
        if keys.heartbeat(owner) not in alive and heads:
            orphans[owner] += len(heads)
        for head in heads:
            place(head, False)
    return Snapshot(time.monotonic(), runs, foreign, dict(orphans), dict(holders),
                    int(reclaimed))


def violations(snapshot: Snapshot, seen_pushed: dict[str, set[int]],
               seen_done: dict[str, set[int]]) -> dict[tuple[str, str], str]:
    """Every violation in one snapshot, keyed so that the same one is recognised next time."""
    found: dict[tuple[str, str], str] = {}
    for run_id, whole in snapshot.runs.items():
        # A partition's facts are named after it: "{tag}" before each key and in ``seen_*``.
        parts = {f"{{{tag}}}": state for tag, state in whole.parts.items()} or {"": whole}
        for label, state in parts.items():
            if state.plan is None:
                continue
            for key, text in _violations(state, label, run_id + label, seen_pushed,
                                         seen_done).items():
                found[(run_id, label + key)] = (f"partition {label}: {text}" if label
                                                else text)
    return found


def _violations(state: RunState, label: str, seen: str, seen_pushed: dict[str, set[int]],
                seen_done: dict[str, set[int]]) -> dict[str, str]:
    found: dict[str, str] = {}
    where: Counter[int] = state.queue + state.inflight
    for seq in state.done:
        where[seq] += 1
    for seq in state.pushed:
        n = where.get(seq, 0)
        if n == 0:
            found[f"lost:{seq}"] = f"batch {seq} is pushed but nowhere"
        elif n > 1:
            found[f"twice:{seq}"] = (
                f"batch {seq} is in {n} places ({state.waiting} {state.queue[seq]}, in "
                f"flight {state.inflight[seq]}, done {int(seq in state.done)})")
    for seq in where:
        if seq not in state.pushed:
            found[f"unpushed:{seq}"] = f"batch {seq} is present but not pushed"
    located = state.queue_items + state.inflight_items + state.committed + state.dead_items
    if located != state.pushed_items:
        found["conservation"] = (
            f"{state.waiting} {state.queue_items} + in flight {state.inflight_items} + "
            f"committed {state.committed} + dead {state.dead_items} = {located} != pushed "
            f"{state.pushed_items}")
    if state.committed + state.dead_items != state.done_items:
        found["double"] = (
            f"committed {state.committed} + dead {state.dead_items} != items of done "
            f"batches {state.done_items}")
    lost_pushed = seen_pushed.setdefault(seen, set()) - state.pushed
    lost_done = seen_done.setdefault(seen, set()) - state.done
    if lost_pushed:
        found["pushed-bit-lost"] = f"pushed bits unset again: {sorted(lost_pushed)[:5]}"
    if lost_done:
        found["done-bit-lost"] = f"done bits unset again: {sorted(lost_done)[:5]}"
    seen_pushed[seen] |= state.pushed
    seen_done[seen] |= state.done
    return found


@dataclass
class CheckerReport:
    samples: int = 0
    failed_samples: int = 0  # Redis unreachable (killed) at sampling time
    partial_samples: int = 0  # on a cluster: some partitions unread (their primary failing over)
    transient: int = 0  # distinct violations seen that went away within the window
    persistent: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    max_orphan_age_s: float = 0.0


SnapshotFn = Callable[[redis.Redis, Keys, list[str]], Snapshot]


class Checker(threading.Thread):
    def __init__(self, client: redis.Redis, keys: Keys, run_ids: list[str], *,
                 interval: float, window: float, snapshot: SnapshotFn = take_snapshot,
                 settle: Callable[[], object] | None = None) -> None:
        super().__init__(name="checker", daemon=True)
        self.client, self.keys, self.run_ids = client, keys, run_ids
        self.snapshot = snapshot  # the transport's: take_snapshot, or chaos.rqview's
        # Over replicas (--redis sentinel): called after each snapshot, raises unless the
        # replicas have what it saw. A failover may undo writes that were never acknowledged,
        # so only a snapshot the replicas confirmed may say "this bit was set".
        self.settle = settle
        self.interval, self.window = interval, window
        self.stopping = threading.Event()
        self.report = CheckerReport()
        self.latest: Snapshot | None = None
        self._open: dict[tuple[str, str], tuple[float, str]] = {}
        self._seen_pushed: dict[str, set[int]] = {}
        self._seen_done: dict[str, set[int]] = {}
        self._orphans_since: dict[str, float] = {}
        self._reported: set[tuple[str, str]] = set()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.sample()

    def sample(self) -> Snapshot | None:
        try:
            snap = self.snapshot(self.client, self.keys, self.run_ids)
            if self.settle is not None:
                self.settle()
        except redis.RedisError as exc:
            with self.lock:
                self.report.failed_samples += 1
            log.debug("snapshot failed: %s", exc)
            return None
        with self.lock:
            self._judge(snap)
            self.latest = snap
        return snap

    def _judge(self, snap: Snapshot) -> None:
        self.report.samples += 1
        if snap.unread:
            self.report.partial_samples += 1
        found = violations(snap, self._seen_pushed, self._seen_done)
        now = snap.at
        for key, text in found.items():
            if key not in self._open:
                self._open[key] = (now, text)
                log.warning("violation seen: run %s: %s", key[0], text)
                if len(self.report.examples) < 20:
                    self.report.examples.append(f"run {key[0]}: {text}")
            first, _ = self._open[key]
            if now - first > self.window and key not in self._reported:
                self._reported.add(key)
                message = f"run {key[0]}: {text} (for {now - first:.1f} s)"
                log.error("violation persists past the window: %s", message)
                self.report.persistent.append(message)
        for key in list(self._open):
            if key not in found:
                del self._open[key]
                self.report.transient += 1
        for owner in snap.orphans:
            self._orphans_since.setdefault(owner, now)
        for owner in list(self._orphans_since):
            if owner not in snap.orphans:
                age = now - self._orphans_since.pop(owner)
                self.report.max_orphan_age_s = max(self.report.max_orphan_age_s, age)

    def finish(self) -> CheckerReport:
        self.stopping.set()
        self.join(timeout=10)
        with self.lock:
            for _, (_first, text) in self._open.items():
                self.report.examples.append(f"still open at the end: {text}")
            return self.report
