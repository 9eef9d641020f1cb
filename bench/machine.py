"""What the figures were measured on: cores, CPU, Python, Redis, library versions, load."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from typing import Any


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def redis_server_version() -> str | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    text = subprocess.run([binary, "--version"], capture_output=True, text=True,
                          check=False).stdout
    found = re.search(r"v=(\S+)", text)
    return found.group(1) if found else text.strip()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "redis_server": redis_server_version(),
        "redis_py": _version("redis"),
        "hiredis": _version("hiredis"),
        "rq": _version("rq"),
        "dramatiq": _version("dramatiq"),
        "celery": _version("celery"),
        "load_average_at_start": load_average(),
    }


def one_line(info: dict[str, Any]) -> str:
    return (f"{info['cores']} cores ({info['cpu']}), Python {info['python']}, "
            f"redis-server {info['redis_server']}, redis-py {info['redis_py']} "
            f"(hiredis {info['hiredis']}), load {info['load_average_at_start']}")
