"""One fresh redis-server per measured run, with the settings the project's guarantees assume."""

from __future__ import annotations

from typing import Any

import redis

from tests.localredis import LocalRedis

# The project runs Redis with appendonly yes and appendfsync always (see tests/localredis.py):
# a commit acknowledged is on disk. Every queue in the benchmark runs against the same settings.
DEFAULT_FSYNC = "always"


def start(fsync: str = DEFAULT_FSYNC) -> LocalRedis:
    server = LocalRedis(fsync=fsync)
    server.start()
    return server


def cpu_seconds(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_stats(client: redis.Redis, top: int = 8) -> list[dict[str, Any]]:
    """The commands that took the most Redis time: calls, total and per-call microseconds."""
    info: dict[str, Any] = client.info("commandstats")
    rows: list[dict[str, Any]] = []
    for name, stats in info.items():
        rows.append({"command": name.removeprefix("cmdstat_"), "calls": int(stats["calls"]),
                     "usec": int(stats["usec"]),
                     "usec_per_call": float(stats["usec_per_call"])})
    rows.sort(key=lambda row: row["usec"], reverse=True)
    return rows[:top]
