"""Producer and consumer processes for tests: started for real, stopped with real signals."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from exactsum.keys import Keys
from tests.launch import Launched, clean_env, launch


class Proc(Launched):
    """A service process of a test (:class:`tests.launch.Launched`)."""

    def report(self) -> dict[str, Any]:
        """The producer's JSON report: the last line of its stdout."""
        report = super().report()
        assert report is not None, (f"{self.name} printed no report: {self.stdout[-1000:]}\n"
                                    f"stderr:\n{self.stderr[-3000:]}")
        return report


@dataclass
class Services:
    redis_url: str
    key_prefix: str
    tmp_path: Path
    procs: list[Proc] = field(default_factory=list)

    @property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    def env(self, **extra: str) -> dict[str, str]:
        settings = {"REDIS_URL": self.redis_url, "KEY_PREFIX": self.key_prefix,
                    "LOG_LEVEL": "INFO"}
        return clean_env(**{**settings, **extra})

    def _start(self, name: str, module: str, args: list[str], stdin: Any = None,
               **env: str) -> Proc:
        started = launch(name, module, args, self.env(**env), self.tmp_path, stdin=stdin)
        proc = Proc(name, started.popen, started.stdout_path, started.stderr_path,
                    started.counters_path)
        self.procs.append(proc)
        return proc

    def consumer(self, *args: str, name: str | None = None, **env: str) -> Proc:
        name = name or f"consumer{sum(p.name.startswith('consumer') for p in self.procs)}"
        id_file = self.tmp_path / f"{name}.id"
        return self._start(name, "consumer_service", ["--id-file", str(id_file), *args], **env)

    def consumer_id(self, proc: Proc, timeout: float = 10) -> str:
        id_file = self.tmp_path / f"{proc.name}.id"
        deadline = time.monotonic() + timeout
        while not id_file.exists() or not id_file.read_text().strip():
            assert time.monotonic() < deadline, f"{proc.name} never wrote its id: {proc.stderr}"
            time.sleep(0.05)
        return id_file.read_text().strip()

    def producer(self, *args: str, name: str = "producer", stdin: Any = None,
                 **env: str) -> Proc:
        return self._start(name, "producer_service", ["--json", *args], stdin=stdin, **env)

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.kill()


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def committed(client: redis.Redis, keys: Keys) -> int:
    """Items committed so far over every run under ``keys``' prefix."""
    total = 0
    for key in client.scan_iter(match=f"{keys.prefix}:run:*:committed"):
        total += int(client.get(key) or 0)
    return total


def assert_exact(report: Mapping[str, Any], items: int, expected_sum: int) -> None:
    """The report proves each item counted exactly once, and its sum is ``expected_sum``, the
    test's own oracle (:func:`numbers_file`, :func:`random_sum`), not the report's own."""
    assert report["sum"] == expected_sum, (report, expected_sum)
    assert report["expected_sum"] == expected_sum, (report, expected_sum)
    assert report["produced"] == items, report
    assert report["committed"] == items, report
    assert report["lost"] == 0, report
    assert report["duplicated"] == 0, report
    assert report["dead_lettered"] == 0, report
    assert sum(report["by_consumer"].values()) == items, report
    assert report["exact"] is True, report


def random_sum(count: int, seed: int, low: int = 1, high: int = 11) -> int:
    """The sum of the producer's ``--count`` random numbers for ``--seed`` (``--min``/``--max``
    ``low``/``high``), computed here, not by the producer: its numbers are Python's
    ``random.Random(seed).choices`` over ``[low, high]``, which draws one ``random()`` per item
    whatever the batches are (for ranges up to 4096 values)."""
    span = high - low + 1
    assert span <= 4096, "wider ranges are drawn with randint"
    rng = random.Random(seed)
    return sum(low + int(rng.random() * span) for _ in range(count))


def numbers_file(tmp_path: Path, count: int, seed: int = 7) -> tuple[Path, int]:
    rng = random.Random(seed)
    values = [rng.randint(-1000, 100_000) for _ in range(count)]
    path = tmp_path / "numbers.txt"
    path.write_text("".join(f"{v}\n" for v in values))
    return path, sum(values)


def finish(producer: Proc, timeout: float = 90) -> dict[str, Any]:
    status = producer.wait(timeout=timeout)
    report = producer.report()
    assert status == 0, (report, producer.stderr[-3000:])
    return report
