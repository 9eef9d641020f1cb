"""redis-benchmark's LPUSH and RPOP against the same kind of server: the ceiling of Redis itself.

redis-benchmark ships with Debian's redis-tools (which redis-server depends on). Its RPOP pops
what its LPUSH pushed (same key), so the pair is a queue of tiny elements with no processing,
no claim and no commit: no exactly-once pipeline can carry more items per Redis command.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from typing import Any

from bench import server


def available() -> bool:
    return shutil.which("redis-benchmark") is not None


def run(requests: int, pipeline: int, clients: int = 50,
        fsync: str = server.DEFAULT_FSYNC) -> dict[str, Any]:
    binary = shutil.which("redis-benchmark")
    config = {"clients": clients, "pipeline": pipeline, "requests": requests}
    if binary is None:
        return {"kind": "redis-benchmark", "config": config, "exact": False,
                "error": "redis-benchmark is not on PATH (Debian: redis-tools)"}
    redis_server = server.start(fsync)
    try:
        text = subprocess.run(
            [binary, "-h", "127.0.0.1", "-p", str(redis_server.port), "-c", str(clients),
             "-n", str(requests), "-P", str(pipeline), "-t", "lpush,rpop", "--csv"],
            capture_output=True, text=True, check=True, timeout=600,
        ).stdout
    finally:
        redis_server.close()
    rows = {row["test"]: row for row in csv.DictReader(io.StringIO(text))}
    return {
        "kind": "redis-benchmark",
        "config": config,
        # Nothing to verify: these are raw commands. "exact" stays true so as not to mark the
        # suite unverified; the table says what the figure is.
        "exact": True,
        "lpush_per_s": float(rows["LPUSH"]["rps"]),
        "rpop_per_s": float(rows["RPOP"]["rps"]),
        "lpush_p99_ms": float(rows["LPUSH"]["p99_latency_ms"]),
        "items_per_s": float(rows["LPUSH"]["rps"]),
    }
