"""Processes for the benchmark: start them, sample their memory and CPU, stop them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PYTHON = sys.executable


def tool(name: str) -> str | None:
    """A command installed beside this Python (the venv's bin), else on PATH."""
    beside = Path(PYTHON).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of ``pid`` and its reaped children, in seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" closing the name, field 3 of proc(5) is index 0: utime is 14, stime 15,
    # cutime 16, cstime 17.
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of every live descendant (forked workers)."""
    total = cpu_seconds(pid) or 0.0
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as children:
            kids = [int(k) for k in children.read().split()]
    except OSError:
        kids = []
    return total + sum(tree_cpu_seconds(kid) for kid in kids)


class Proc:
    """One child process with its output in files."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], logdir: Path,
                 stdout: bool = False) -> None:
        self.name = name
        self.err_path = logdir / f"{name}.err"
        self.out_path = logdir / f"{name}.out"
        with self.err_path.open("wb") as err, self.out_path.open("wb") as out:
            self.popen = subprocess.Popen(
                list(args), env=env, stdin=subprocess.DEVNULL,
                stdout=out if stdout else subprocess.DEVNULL, stderr=err,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr_tail(self, chars: int = 2000) -> str:
        return self.err_path.read_text(errors="replace")[-chars:]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process (and its session, for forking workers); kill it if it lingers."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                return self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                return self.popen.wait(timeout=10)
        return self.popen.returncode


class RssSampler(threading.Thread):
    """Samples the resident memory of some processes every ``interval`` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pids = pids
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.done = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while True:
            row = {name: rss for name, pid in self.pids.items()
                   if (rss := rss_mb(pid)) is not None}
            if row:
                self.samples.append((round(time.monotonic() - self.started_at, 3), row))
            if self.done.wait(self.interval):
                return

    def finish(self) -> list[tuple[float, dict[str, float]]]:
        self.done.set()
        self.join(timeout=5)
        return self.samples
