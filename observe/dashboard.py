"""``python -m observe.dashboard``: one web page that shows the work as it happens.

    python -m observe.dashboard --port 8080     # then open http://127.0.0.1:8080/

A poller thread takes a :mod:`observe.snapshot` about once a second and turns the differences
between two looks into events (batches reclaimed, dead letters, refused commits, consumers that
come and go, verdicts). The page (``dashboard.html``, one file with its script inline, nothing
fetched from elsewhere) asks ``/api/state`` for the latest look every second. ``/healthz`` is
200 while the last look is recent. Starlette serves it, under uvicorn.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from exactsum import options
from exactsum.cluster import connect
from exactsum.keys import Keys
from exactsum.logs import setup_logging
from exactsum.options import EnvParser, option, port, positive_float, positive_int
from exactsum.settings import RedisSettings
from exactsum.signals import stop_on_signals
from observe.snapshot import Snapshot, take

log = logging.getLogger("dashboard")

HISTORY = 120  # looks kept for the page's charts
EVENTS = 50


def changes(before: Snapshot, after: Snapshot) -> list[dict[str, Any]]:
    """What happened between two looks, as events for the page's list of faults."""
    out: list[dict[str, Any]] = []

    def event(kind: str, text: str) -> None:
        out.append({"at": after.at, "kind": kind, "text": text})

    if after.reclaimed > before.reclaimed:
        event("reclaim", f"{after.reclaimed - before.reclaimed} batches reclaimed from a "
              "consumer whose heartbeat expired")
    if after.foreign_dead > before.foreign_dead:
        new = after.foreign_dead - before.foreign_dead
        event("dead", f"{new} {'element' if new == 1 else 'elements'} of no run dead-lettered")
    old_runs = {r.run_id: r for r in before.runs}
    for run in after.runs:
        old = old_runs.get(run.run_id)
        if old is None:
            event("run", f"run {run.run_id} started: {run.items:,} items")
            continue
        if run.dead_lettered > old.dead_lettered:
            event("dead", f"{run.dead_lettered - old.dead_lettered:,} items of run "
                  f"{run.run_id} dead-lettered")
        if run.stale_commits > old.stale_commits:
            event("refused", f"{run.stale_commits - old.stale_commits} commits refused in run "
                  f"{run.run_id} (already counted, or reclaimed from a late consumer)")
        if run.audit is not None and old.audit is None:
            kind = "ok" if run.audit["exact"] else "fault"
            event(kind, f"run {run.run_id} {run.state}: sum {run.sum:,}, expected "
                  f"{run.expected_sum:,}, lost {run.audit['lost']}, doubled "
                  f"{run.audit['duplicated']}")
    alive_before = {c.consumer_id for c in before.consumers if c.alive}
    alive_after = {c.consumer_id for c in after.consumers if c.alive}
    for consumer_id in sorted(alive_after - alive_before):
        event("consumer", f"consumer {consumer_id} joined")
    # A consumer that stops in order withdraws from the registry; one that crashed or hangs
    # stays there without a heartbeat until the reclaimers have moved its claims back.
    registered = {c.consumer_id: c for c in after.consumers}
    for consumer_id in sorted(alive_before - alive_after):
        gone = registered.get(consumer_id)
        if gone is None:
            event("consumer", f"consumer {consumer_id} stopped and left")
        else:
            held = f", holding {gone.inflight_batches} batches" if gone.inflight_batches else ""
            event("fault", f"consumer {consumer_id} lost its heartbeat{held}")
    return out


class Poller(threading.Thread):
    """Takes a look every ``interval`` seconds and keeps the latest, the history and events."""

    def __init__(self, client: redis.Redis, keys: Keys, *, runs: int, interval: float) -> None:
        super().__init__(name="poller", daemon=True)
        self.client, self.keys, self.runs, self.interval = client, keys, runs, interval
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.latest: Snapshot | None = None
        self.error: str | None = None
        self.polled_at = 0.0
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)

    def poll(self) -> None:
        try:
            snap = take(self.client, self.keys, self.runs)
        except redis.RedisError as exc:
            with self._lock:
                self.error = f"{type(exc).__name__}: {exc}"
            log.warning("cannot read Redis: %s", exc)
            return
        point = {"at": snap.at, "queue": snap.queue_depth,
                 "inflight": sum(c.inflight_batches for c in snap.consumers),
                 "rate": sum(c.rate or 0 for c in snap.consumers if c.alive)}
        with self._lock:
            if self.latest is not None:
                self.events.extend(changes(self.latest, snap))
            self.latest, self.error, self.polled_at = snap, None, time.monotonic()
            self.history.append(point)

    def run(self) -> None:
        while True:
            self.poll()
            if self.stopping.wait(self.interval):
                return

    def state(self) -> dict[str, Any]:
        with self._lock:
            body: dict[str, Any] = self.latest.as_dict() if self.latest else {}
            body.update(error=self.error, interval=self.interval, history=list(self.history),
                        events=list(reversed(self.events)))
            return body

    def healthy(self) -> bool:
        return self.polled_at > 0 and time.monotonic() - self.polled_at < 5 * self.interval + 5


def create_app(poller: Poller) -> Starlette:
    page = resources.files("observe").joinpath("dashboard.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def api_state(request: Request) -> Response:
        return JSONResponse(poller.state(), headers={"Cache-Control": "no-store"})

    async def healthz(request: Request) -> Response:
        ok = poller.healthy()
        return JSONResponse({"ok": ok, "error": poller.error}, status_code=200 if ok else 503)

    return Starlette(routes=[Route("/", index), Route("/api/state", api_state),
                             Route("/healthz", healthz)])


@dataclass(frozen=True)
class DashboardSettings(RedisSettings):
    PROG = "python -m observe.dashboard"
    DESCRIPTION = "A live web page of the queue, the consumers, the runs' sums and the faults."

    host: str = option("127.0.0.1", env="DASHBOARD_HOST", help="address to listen on")
    port: int = option(8080, env="DASHBOARD_PORT", type=port, help="port to listen on")
    interval: float = option(1.0, env="DASHBOARD_INTERVAL", type=positive_float,
                             help="seconds between looks at Redis")
    runs: int = option(5, env="DASHBOARD_RUNS", type=positive_int,
                       help="how many of the latest runs to show")


def build_parser() -> EnvParser:
    return options.build_parser(DashboardSettings)


def main(argv: Sequence[str] | None = None) -> int:
    args = options.parse(DashboardSettings, argv)
    setup_logging(args.log_level, args.log_format, service="dashboard", identity="-")
    client = connect(args.redis, socket_timeout=5.0, name="dashboard")
    poller = Poller(client, Keys(args.key_prefix), runs=args.runs, interval=args.interval)
    poller.start()
    log.info("dashboard on http://%s:%d/", args.host, args.port)
    # uvicorn stops on SIGTERM/SIGINT and then raises the signal again into the handler that was
    # there before it: ours, so that a stop is an exit 0 and not a death by SIGTERM (143, which
    # `docker compose up --exit-code-from producer` prints after the run's report).
    stop_on_signals(poller.stopping)
    # log_config=None: uvicorn keeps our handlers (and JSON lines with LOG_FORMAT=json).
    uvicorn.run(create_app(poller), host=args.host, port=args.port, log_config=None,
                log_level="warning", access_log=False)
    poller.stopping.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
