"""exactsum.counters: exact under threads, kept in a file a reader can trust, added up over an
RQ consumer's worker files, and counted by retrying() once per attempt."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from exactsum import counters
from exactsum.connection import retrying
from exactsum.counters import COUNTERS, Counters, Event


def test_increments_from_many_threads_are_all_counted() -> None:
    registry = Counters()

    def bump() -> None:
        for _ in range(5_000):
            registry.incr(Event.COMMIT_FENCED)
            registry.incr(Event.ELEMENTS_RECLAIMED, 2)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = registry.snapshot()
    assert snapshot[Event.COMMIT_FENCED] == 40_000
    assert snapshot[Event.ELEMENTS_RECLAIMED] == 80_000
    assert snapshot[Event.REDIS_RETRY] == 0  # every event is present, at zero
    assert set(snapshot) == {event.value for event in Event}


def test_the_file_follows_the_counts_and_read_adds_the_worker_files(tmp_path: Path) -> None:
    path = tmp_path / "c.counters.json"
    assert counters.read(path)[Event.BATCH_RETRIED] == 0  # not written yet: zeros
    registry = Counters()
    registry.keep_in(path)
    assert json.loads(path.read_text())["counters"][Event.BATCH_RETRIED] == 0
    registry.incr(Event.BATCH_RETRIED, 3)
    deadline = time.monotonic() + 10
    while counters.read(path)[Event.BATCH_RETRIED] != 3:
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.01)
    # An RQ worker process' file beside it is added; a half-written temporary one is not.
    (tmp_path / "c.counters.json.c1.w0.1").write_text(
        json.dumps({"counters": {Event.BATCH_RETRIED.value: 4, Event.COMMIT_FENCED.value: 1}}))
    (tmp_path / ".c.counters.json.99.tmp").write_text("{\"counters\": {\"batch_re")
    total = counters.read(path)
    assert total[Event.BATCH_RETRIED] == 7 and total[Event.COMMIT_FENCED] == 1, total


def test_a_process_leaves_its_counts_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "p.counters.json"
    code = ("from exactsum import counters\n"
            "from exactsum.counters import Event\n"
            f"with counters.kept_in({str(path)!r}):\n"
            "    counters.incr(Event.PUSH_WAIT, 5)\n")  # exits at once: the last write counts
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert counters.read(path)[Event.PUSH_WAIT] == 5


def test_retrying_counts_each_failed_attempt(caplog: pytest.LogCaptureFixture) -> None:
    failures = iter([redis.ConnectionError("down"), redis.TimeoutError("slow")])

    def flaky() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "ok"

    before = COUNTERS.get(Event.REDIS_RETRY)
    with caplog.at_level(logging.CRITICAL):
        assert retrying(flaky, "flaky", logging.getLogger("test.counters"), base=0.001,
                        cap=0.002) == "ok"
    assert COUNTERS.get(Event.REDIS_RETRY) - before == 2
