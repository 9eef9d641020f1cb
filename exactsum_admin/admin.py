"""``python -m exactsum_admin``: look at dead letters, and requeue or drop them.

    python -m exactsum_admin dead list [--run ID] [--json]
    python -m exactsum_admin dead requeue [--run ID] (--all | --index N ...)
    python -m exactsum_admin dead drop [--run ID] (--all | --index N ...)
    python -m exactsum_admin audit --run ID [--json]     (or: status --run ID)

Without ``--run`` the commands act on dead letters that belong to no run (foreign elements).
Requeue puts a batch back on the queue as unresolved, so consumers try it again (a batch of a
run of the RQ transport goes back as an RQ job, on the run's RQ queue); drop moves the
entry to a list of dropped entries, where the run's audit still accounts for its items. Both
are atomic scripts and act on an entry only if it is still there, so two operators cannot
requeue the same batch twice.

``audit`` (or ``status``) judges a run again; of a run that is not fully pushed (its producer
died, or was interrupted) it says so, how many batches were pushed, whether its producer still
shows signs of life, and how to resume it, and exits 4.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from exactsum import options, transport
from exactsum.audit import audit
from exactsum.cluster import connect, register_scripts
from exactsum.keys import Keys
from exactsum.options import EnvParser, non_negative_int
from exactsum.protocol import ForeignElement, decode
from exactsum.runs import (
    INCOMPLETE_STATES,
    PRODUCER_SILENCE_S,
    RunPlan,
    pushed_bitmap,
    run_partitions,
)
from exactsum.scripts import Moved
from exactsum.settings import RedisSettings


@dataclass(frozen=True)
class AdminSettings(RedisSettings):
    """Where Redis is; the sub-commands' arguments are plain ones (:func:`build_parser`)."""

    PROG = "python -m exactsum_admin"
    DESCRIPTION = "Dead letters: list, requeue, drop."


def build_parser() -> EnvParser:
    parser = options.build_parser(AdminSettings)
    topics = parser.add_subparsers(dest="topic", required=True)
    for name in ("audit", "status"):
        audit_cmd = topics.add_parser(name, help="judge a run again from what Redis holds; "
                                      "say whether it is incomplete and how to resume it")
        audit_cmd.add_argument("run_id", nargs="?", default=None, metavar="RUN",
                               help="run id (or --run)")
        audit_cmd.add_argument("--run", default=None, help="run id")
        audit_cmd.add_argument("--json", action="store_true", help="print the audit as JSON")
    dead = topics.add_parser("dead", help="dead letters")
    actions = dead.add_subparsers(dest="action", required=True)
    for name, text in (("list", "show dead letters"), ("requeue", "put them back on the queue"),
                       ("drop", "give up on them (kept in the audit)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("--run", default=None, help="run id (default: elements of no run)")
        if name == "list":
            action.add_argument("--json", action="store_true", help="one JSON object per line")
        else:
            which = action.add_mutually_exclusive_group(required=True)
            which.add_argument("--all", action="store_true", help="every entry")
            which.add_argument("--index", type=non_negative_int, nargs="+",
                               help="entries by their index in `list`")

    return parser


def _describe(index: int, raw: bytes) -> dict[str, Any]:
    try:
        entry: dict[str, Any] = json.loads(raw)
    except ValueError:
        return {"index": index, "reason": "unreadable entry", "raw": raw[:80].decode("latin-1")}
    element = base64.b64decode(entry.get("element_b64", ""))
    entry.pop("element_b64", None)
    entry["index"] = index
    entry["bytes"] = len(element)
    entry["preview"] = element[:60].decode("latin-1")
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = options.settings_from(AdminSettings, parser, args)
    keys = Keys(settings.key_prefix)
    client = connect(settings.redis, socket_timeout=10.0)
    if args.topic in ("audit", "status"):
        run_id = args.run or args.run_id
        if not run_id:
            print(f"error: {args.topic} needs a run id", file=sys.stderr)
            return 2
        return _audit(client, keys, run_id, args.json)
    # Each partition of a run on a Redis Cluster has its own dead letters (one list here).
    if args.run:
        parts = run_partitions(client, keys, args.run)
    elif args.redis_cluster:
        parts = [keys.partition(t.decode()) for t in
                 sorted(cast(set[bytes], client.smembers(keys.partitions)))]
    else:
        parts = [keys]
    entries = [
        (part, dead_list, raw)
        for part in parts
        for dead_list in [part_dead_list(part, args.run)]
        for raw in cast(list[bytes], client.lrange(dead_list, 0, -1))
    ]
    where = (part_dead_list(parts[0], args.run) if len(parts) == 1
             else f"{len(parts)} partitions")

    if args.action == "list":
        for index, (_, _, raw) in enumerate(entries):
            described = _describe(index, raw)
            if args.json:
                print(json.dumps(described))
            else:
                facts = ", ".join(f"{k}={described[k]}" for k in ("seq", "items", "attempts")
                                  if k in described)
                print(f"[{index}] {described.get('reason')}" + (f" ({facts})" if facts else ""))
        if not args.json:
            print(f"{len(entries)} dead letters in {where}")
        return 0

    chosen = range(len(entries)) if args.all else args.index
    bad = [i for i in chosen if i >= len(entries)]
    if bad:
        print(f"error: no entry {bad[0]}; {where} has {len(entries)}", file=sys.stderr)
        return 2
    scripts = register_scripts(client, min_replicas=args.min_replicas,
                               replica_timeout=args.replica_timeout)
    meta = (cast(dict[bytes, bytes], client.hgetall(keys.run(args.run).meta)) if args.run
            else {})
    done = 0
    for index in chosen:
        part, dead_list, raw = entries[index]
        rk = part.run(args.run) if args.run else None
        if args.action == "drop":
            moved = scripts.drop_dead(keys=[dead_list, rk.dropped if rk else part.dropped],
                                      args=[raw])
            done += Moved(int(moved)) == Moved.MOVED
            continue
        element = base64.b64decode(json.loads(raw)["element_b64"])
        seq, count = "", 0
        if rk is not None:
            try:
                batch = decode(element)
            except ForeignElement as exc:
                print(f"error: entry {index} holds no batch of a run: {exc}", file=sys.stderr)
                return 2
            seq, count = str(batch.seq), batch.count
        if rk is not None:
            # A batch goes back the way its run's batches travel.
            run_transport = transport.get(meta.get(b"transport", b"native").decode())
            # On a Redis Cluster, back on the queue of the batch's own partition.
            done += run_transport.requeue_dead(client, part, scripts, args.run, meta, raw,
                                               element, int(seq), count)
            continue
        # An element of no run goes back on the native queue, where it was found.
        done += Moved(int(scripts.requeue_dead(
            keys=[dead_list, part.queue, dead_list, dead_list, dead_list],
            args=[raw, element, seq, count],
        ))) == Moved.MOVED
    print(f"{args.action}: {done} of {len(chosen)} entries")
    return 0


def part_dead_list(part: Keys, run_id: str | None) -> str:
    return part.run(run_id).dead if run_id else part.dead


def _audit(client: redis.Redis, keys: Keys, run_id: str, as_json: bool) -> int:
    raw = cast(dict[bytes, bytes], client.hgetall(keys.run(run_id).meta))
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    if "items" not in meta:
        print(f"error: run {run_id!r} is unknown or expired", file=sys.stderr)
        return 2
    state = meta.get("state", "?")
    complete = state not in INCOMPLETE_STATES and "expected_sum" in meta
    plan = RunPlan(run_id, int(meta["items"]), int(meta["batch_size"]))
    result = audit(client, keys, plan, int(meta.get("expected_sum", 0)), complete)
    producer = _producer_note(meta)
    record = {**result.as_dict(), "state": state, "complete": complete, "producer": producer}
    if not complete:
        record["resume"] = _resume_hint(run_id, meta)
        record["pushed_batches"] = sum(bin(byte).count("1")
                                       for byte in pushed_bitmap(client, keys, run_id))
    if as_json:
        print(json.dumps(record))
    elif not complete:
        print(f"run {run_id} is INCOMPLETE ({state}): its producer {producer}")
        batches = meta.get("batches", "?") if meta.get("source_kind") != "stream" else "?"
        print(f"  batches pushed    : {record['pushed_batches']} of {batches} "
              f"(batches of {meta['batch_size']})")
        if meta.get("source_kind") == "stream":
            print(f"  lines read        : {meta.get('items_read', '?')} (a stream)")
        print(f"  items committed   : {result.committed}, sum so far {result.sum}")
        print(f"  items pending     : {result.pending} (pushed, not counted yet)")
        print(f"  dead-lettered     : {result.dead_lettered}")
        print(record["resume"])
    else:
        for name, value in record.items():
            print(f"{name:>14}: {value}")
    if not complete:
        return 4
    return 0 if result.exact else (3 if result.accounted else 1)


def _producer_note(meta: dict[str, str]) -> str:
    seen = meta.get("producer_seen_ms")
    if seen is None:
        return "left no sign of life"
    ago = time.time() - int(seen) / 1000
    state = meta.get("state")
    if state == "interrupted":
        return f"was interrupted ({ago:.0f} s ago)"
    if state in INCOMPLETE_STATES | {"pushed"} and ago > PRODUCER_SILENCE_S:
        return f"is gone (last seen {ago:.0f} s ago; it died or was killed)"
    if state in INCOMPLETE_STATES | {"pushed"}:
        return f"is still running (last seen {ago:.1f} s ago)"
    return f"finished ({state})"


def _resume_hint(run_id: str, meta: dict[str, str]) -> str:
    if meta.get("resumable", "yes") != "yes":
        return (f"it cannot be resumed: {meta['resumable']}; what was pushed is counted, "
                "start a new run for the rest")
    kind = meta.get("source_kind")
    source = {"file": f"the same file (sha256 {meta.get('source_sha256', '?')[:12]}..., "
                      f"{meta.get('source_lines', '?')} lines)",
              "random": f"--count {meta.get('source_count')} --min {meta.get('source_min')} "
                        f"--max {meta.get('source_max')} --seed {meta.get('source_seed')}"}
    return (f"to resume it: run the producer again with {source.get(kind or '', 'the same source')}"
            f", --batch {meta['batch_size']} and --run-id {run_id}; batches already pushed are "
            "not pushed again")


if __name__ == "__main__":
    sys.exit(main())
