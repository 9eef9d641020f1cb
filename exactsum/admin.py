"""``python -m exactsum.admin``: look at dead letters, and requeue or drop them.

    python -m exactsum.admin dead list [--run ID] [--json]
    python -m exactsum.admin dead requeue [--run ID] (--all | --index N ...)
    python -m exactsum.admin dead drop [--run ID] (--all | --index N ...)
    python -m exactsum.admin audit --run ID [--json]

Without ``--run`` the commands act on dead letters that belong to no run (foreign elements).
Requeue puts a batch back on the queue as unresolved, so consumers try it again (a batch of a
run of the RQ transport goes back as an RQ job, on the run's RQ queue); drop moves the
entry to a list of dropped entries, where the run's audit still accounts for its items. Both
are atomic scripts and act on an entry only if it is still there, so two operators cannot
requeue the same batch twice.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Sequence
from typing import Any, cast

import redis
from rq import Queue

from exactsum.connection import make_client
from exactsum.keys import Keys
from exactsum.options import EnvParser, non_negative_int, redis_target
from exactsum.protocol import ForeignElement, decode
from exactsum.rqjobs import JobOptions, enqueue_jobs
from exactsum.runs import RunPlan, audit
from exactsum.scripts import Scripts


def build_parser() -> EnvParser:
    parser = EnvParser(prog="python -m exactsum.admin",
                       description="Dead letters: list, requeue, drop.")
    parser.add_common_options()
    topics = parser.add_subparsers(dest="topic", required=True)
    audit_cmd = topics.add_parser("audit", help="judge a run again from what Redis holds")
    audit_cmd.add_argument("--run", required=True, help="run id")
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
    args = build_parser().parse_args(argv)
    keys = Keys(args.key_prefix)
    client = make_client(redis_target(args), socket_timeout=10.0)
    if args.topic == "audit":
        return _audit(client, keys, args.run, args.json)
    rk = keys.run(args.run) if args.run else None
    dead_list = rk.dead if rk else keys.dead
    entries = cast(list[bytes], client.lrange(dead_list, 0, -1))

    if args.action == "list":
        for index, raw in enumerate(entries):
            described = _describe(index, raw)
            if args.json:
                print(json.dumps(described))
            else:
                facts = ", ".join(f"{k}={described[k]}" for k in ("seq", "items", "attempts")
                                  if k in described)
                print(f"[{index}] {described.get('reason')}" + (f" ({facts})" if facts else ""))
        if not args.json:
            print(f"{len(entries)} dead letters in {dead_list}")
        return 0

    chosen = range(len(entries)) if args.all else args.index
    bad = [i for i in chosen if i >= len(entries)]
    if bad:
        print(f"error: no entry {bad[0]}; {dead_list} has {len(entries)}", file=sys.stderr)
        return 2
    scripts = Scripts.register(client)
    rq_options = _rq_options(client, rk.meta) if rk is not None else None
    done = 0
    for index in chosen:
        raw = entries[index]
        if args.action == "drop":
            done += int(scripts.drop_dead(keys=[dead_list, rk.dropped if rk else keys.dropped],
                                          args=[raw]))
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
        if rk is not None and args.run and rq_options is not None:
            done += _requeue_rq(client, keys, args.run, raw, element, int(seq), count,
                                rq_options)
            continue
        done += int(scripts.requeue_dead(
            keys=[dead_list, keys.queue, rk.done if rk else dead_list,
                  rk.dead_items if rk else dead_list, rk.attempts if rk else dead_list],
            args=[raw, element, seq, count],
        ))
    print(f"{args.action}: {done} of {len(chosen)} entries")
    return 0


def _rq_options(client: redis.Redis, meta_key: str) -> JobOptions | None:
    """How the run's producer enqueued its RQ jobs; None for a run of the native transport."""
    meta = cast(dict[bytes, bytes], client.hgetall(meta_key))
    return JobOptions.from_meta(meta) if meta.get(b"transport") == b"rq" else None


def _requeue_rq(client: redis.Redis, keys: Keys, run_id: str, raw: bytes, element: bytes,
                seq: int, count: int, options: JobOptions) -> int:
    """A dead-lettered batch of an RQ run goes back as a new RQ job (same id, fresh retries, on
    the run's RQ queue), in one transaction with making it unresolved again; 0 if the entry is
    no longer there."""
    rk = keys.run(run_id)
    entry = raw.decode()  # JSON: ASCII text, as the scripts stored it
    queue = Queue(options.queue, connection=client)
    with client.pipeline(transaction=True) as tx:
        while True:
            try:
                tx.watch(rk.dead)  # type: ignore[no-untyped-call]
                if tx.lpos(rk.dead, entry) is None:
                    return 0
                tx.multi()
                tx.hset(rk.batches, str(seq), element)
                tx.setbit(rk.done, seq, 0)
                tx.decrby(rk.dead_items, count)
                tx.hdel(rk.attempts, str(seq))
                tx.lrem(rk.dead, 1, entry)
                enqueue_jobs(queue, tx, keys.prefix, run_id, [(seq, count)], options)
                tx.execute()
                return 1
            except redis.WatchError:
                continue


def _audit(client: redis.Redis, keys: Keys, run_id: str, as_json: bool) -> int:
    raw = cast(dict[bytes, bytes], client.hgetall(keys.run(run_id).meta))
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    if "expected_sum" not in meta:
        print(f"error: run {run_id!r} is unknown, expired, or not fully pushed", file=sys.stderr)
        return 2
    plan = RunPlan(run_id, int(meta["items"]), int(meta["batch_size"]))
    result = audit(client, keys, plan, int(meta["expected_sum"]))
    if as_json:
        print(json.dumps(result.as_dict()))
    else:
        for name, value in result.as_dict().items():
            print(f"{name:>14}: {value}")
    return 0 if result.exact else (3 if result.accounted else 1)


if __name__ == "__main__":
    sys.exit(main())
