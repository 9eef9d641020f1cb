"""``python -m observe.status``: the runs, the queue, the consumers and the faults, at a glance.

    python -m observe.status              # one look, as tables
    python -m observe.status --watch      # redrawn every second until Ctrl-C
    python -m observe.status --json       # one JSON object, for scripts

Everything comes from Redis (:mod:`observe.snapshot`), so it works from anywhere that reaches
Redis, with read access only.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from exactsum import options
from exactsum.cluster import connect
from exactsum.connection import CredentialsError, RetryAborted
from exactsum.keys import Keys
from exactsum.options import EnvParser, option, positive_float, positive_int, settings_from
from exactsum.settings import RedisSettings
from exactsum.transport import DEFAULT as DEFAULT_TRANSPORT
from observe.snapshot import ConsumerView, RunView, Snapshot, take

TABLE: dict[str, Any] = {"box": box.SIMPLE_HEAD, "show_edge": False, "title_justify": "left",
                         "title_style": "bold"}


@dataclass(frozen=True)
class StatusSettings(RedisSettings):
    PROG = "python -m observe.status"
    DESCRIPTION = ("Runs with their progress and verdict, the queue, each consumer with its rate "
                   "and last heartbeat, and dead letters.")

    runs: int = option(5, env="STATUS_RUNS", type=positive_int,
                       help="how many of the latest runs to show")
    interval: float = option(1.0, env="STATUS_INTERVAL", type=positive_float,
                             help="seconds between redraws with --watch")


def build_parser() -> EnvParser:
    parser = options.build_parser(StatusSettings)
    # How to show it: switches of this command alone, with no variable.
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    mode.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def verdict(run: RunView) -> Text:
    if run.audit is not None:
        if run.audit["exact"]:
            return Text("exact", style="bold green")
        if run.audit["accounted"]:
            return Text(f"accounted, {run.dead_lettered:,} dead-lettered", style="yellow")
        return Text(f"NOT EXACT: lost {run.audit['lost']:,}, doubled "
                    f"{run.audit['duplicated']:,}", style="bold red")
    if run.finished:
        return Text(run.state)
    return Text("pushing" if run.state == "pushing" else "waiting for consumers", style="cyan")


def _batches(n: int) -> str:
    return f"{n:,} batch" if n == 1 else f"{n:,} batches"


def _ago(ms: int | None, now: float) -> str:
    return "-" if ms is None else f"{max(0.0, now - ms / 1000):.1f}s ago"


def _committed(consumer: ConsumerView, snap: Snapshot) -> int:
    """Its own total as of its last heartbeat; for a lost one, what Redis counted for it."""
    if consumer.committed is not None:
        return consumer.committed
    return sum(run.by_consumer.get(consumer.consumer_id, 0) for run in snap.runs)


def render(snap: Snapshot) -> RenderableType:
    inflight = sum(c.inflight_batches for c in snap.consumers)
    inflight_items = sum(c.inflight_items for c in snap.consumers)
    head = Text.assemble(
        ("exactsum ", "bold"), f"prefix {snap.prefix}  ",
        time.strftime("%H:%M:%S", time.localtime(snap.at)), "\n",
        "queue ", (_batches(snap.queue_depth), "bold"), " waiting · in flight ",
        (_batches(inflight), "bold"), f" ({inflight_items:,} items) · reclaimed ",
        (_batches(snap.reclaimed), "bold"), " · dead letters of no run ",
        (f"{snap.foreign_dead:,}", "bold"),
    )
    for name, jobs in snap.rq_queues.items():
        head.append(f" · RQ queue {name} ")
        head.append(f"{jobs:,} jobs", style="bold")
    runs = Table(title="runs", **TABLE)
    for name in ("run", "state", "progress", "committed", "dead", "sum", "expected sum",
                 "verdict"):
        runs.add_column(name, justify="left" if name in ("run", "state", "verdict") else "right")
    for run in snap.runs:
        share = run.resolved / run.items if run.items else 1.0
        expected = "-" if run.expected_sum is None else f"{run.expected_sum:,}"
        state = run.state + ("" if run.transport == DEFAULT_TRANSPORT
                             else f" ({run.transport})")
        runs.add_row(run.run_id, state, f"{run.resolved:,}/{run.items:,} {share:4.0%}",
                     f"{run.committed:,}", f"{run.dead_lettered:,}", f"{run.sum:,}", expected,
                     verdict(run))
    consumers = Table(title="consumers", **TABLE)
    for name in ("consumer", "host", "threads", "items/s", "committed", "in flight",
                 "last heartbeat"):
        consumers.add_column(name, justify="left" if name in ("consumer", "host") else "right")
    for c in snap.consumers:
        lapsed = snap.at - (c.last_heartbeat_ms or 0) / 1000
        if not c.alive and not c.inflight_batches and lapsed > 60:
            continue  # long gone, and nothing left behind
        ago = _ago(c.last_heartbeat_ms, snap.at)
        beat = Text(ago) if c.alive else Text(
            ("lost, " if c.inflight_batches else "lost, reclaimed, ") + ago, style="red")
        consumers.add_row(c.consumer_id, c.host or "-", str(c.threads or "-"),
                          f"{c.rate or 0:,.0f}", f"{_committed(c, snap):,}",
                          f"{c.inflight_batches} ({c.inflight_items:,} items)", beat)
    parts: list[RenderableType] = [head, Text(""), runs, Text(""), consumers]
    if snap.recent_dead:
        dead = Table(title="newest dead letters", **TABLE)
        for name in ("run", "batch", "items", "consumer", "reason"):
            dead.add_column(name)
        for entry in snap.recent_dead:
            dead.add_row(str(entry.get("run") or "-"), str(entry.get("seq", "-")),
                         str(entry.get("items", "-")), str(entry.get("consumer", "-")),
                         str(entry.get("reason", "")))
        parts += [Text(""), dead]
    return Group(*parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from(StatusSettings, parser, args)
    keys = Keys(settings.key_prefix)
    try:
        client = connect(settings.redis, socket_timeout=5.0, name="status")
        snap = take(client, keys, settings.runs)
    except (CredentialsError, redis.RedisError, RetryAborted) as exc:
        sys.stderr.write(f"status: error: {type(exc).__name__}: {exc}\n")
        return 2
    if args.json:
        print(json.dumps(snap.as_dict()))
        return 0
    if not args.watch:
        if sys.stdout.isatty():
            Console().print(render(snap))
        else:  # plain text for pipes and files: no colours, no trailing blanks
            console = Console(width=160, no_color=True, highlight=False)
            with console.capture() as captured:
                console.print(render(snap))
            print("\n".join(line.rstrip() for line in captured.get().splitlines()))
        return 0
    console = Console()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with Live(render(snap), console=console, auto_refresh=False) as live:
            while not stop.wait(settings.interval):
                live.update(_refresh(client, keys, settings.runs, snap), refresh=True)
    except KeyboardInterrupt:
        pass
    return 0


def _refresh(client: redis.Redis, keys: Keys, runs: int, last: Snapshot) -> RenderableType:
    try:
        return render(take(client, keys, runs))
    except redis.RedisError as exc:
        return Group(render(last), Text(f"redis: {exc}; showing the last look", style="red"))


if __name__ == "__main__":
    sys.exit(main())
