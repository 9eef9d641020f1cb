"""``exactsum.connection.retrying``, the one retry loop of the services: no Redis needed, the
operations fail the way redis-py does."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis

from exactsum.connection import RetryAborted, retrying

log = logging.getLogger("test.retrying")


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns "done"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_transient_errors_are_retried_and_each_attempt_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    operation = Flaky(3, redis.ConnectionError("connection refused"))
    lost: list[int] = []
    with caplog.at_level(logging.WARNING, logger=log.name):
        result = retrying(operation, "push", log, on_error=lambda: lost.append(1), base=0.001,
                          cap=0.002)
    assert result == "done" and operation.calls == 4
    assert len(lost) == 3  # on_error after every failure: a reply may have been lost
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3
    assert all("push failed (ConnectionError: connection refused)" in w for w in warnings)
    assert [f"attempt {n}," in w for n, w in zip((1, 2, 3), warnings, strict=True)] == [True] * 3


@pytest.mark.parametrize("error", [redis.TimeoutError("slow"), redis.exceptions.ReadOnlyError(
    "replica"), redis.exceptions.TryAgainError("resharding"), redis.BusyLoadingError("AOF")])
def test_every_transient_kind_is_retried(error: Exception) -> None:
    operation = Flaky(1, error)
    assert retrying(operation, "x", log, base=0.001, cap=0.001) == "done"
    assert operation.calls == 2


@pytest.mark.parametrize("error", [ValueError("a bug"), redis.ResponseError("WRONGTYPE"),
                                   redis.AuthenticationError("invalid password")])
def test_errors_that_waiting_cannot_fix_are_raised_at_once(error: Exception) -> None:
    operation = Flaky(1, error)
    with pytest.raises(type(error)):
        retrying(operation, "x", log, base=0.001)
    assert operation.calls == 1


def test_a_deadline_ends_the_retries() -> None:
    operation = Flaky(10**6, redis.ConnectionError("down"))
    started = time.monotonic()
    with pytest.raises(RetryAborted, match="deadline passed"):
        retrying(operation, "audit", log, deadline=started + 0.2, base=0.01, cap=0.05)
    assert time.monotonic() - started < 1.0
    assert operation.calls > 1


def test_a_stop_ends_the_wait_between_attempts() -> None:
    stop = threading.Event()
    operation = Flaky(10**6, redis.ConnectionError("down"))
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    with pytest.raises(RetryAborted, match="stopped"):
        retrying(operation, "claim", log, stop=stop, base=5.0, cap=5.0)
    # The 2.5-5 s backoff was cut short by the stop.
    assert time.monotonic() - started < 2.0


class FailsThenBreaks:
    """A transient failure, then an error that waiting cannot fix."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls == 1:
            raise redis.ConnectionError("reset")
        raise redis.ResponseError("WRONGTYPE")


def test_an_error_that_waiting_cannot_fix_ends_the_retries_too() -> None:
    operation = FailsThenBreaks()
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        retrying(operation, "x", log, base=0.001, cap=0.001)
    assert operation.calls == 2


def test_transient_error_replies_are_retried_and_others_not() -> None:
    operation = Flaky(2, redis.ResponseError("NOREPLICAS Not enough good replicas to write."))
    assert retrying(operation, "x", log, base=0.001, cap=0.001) == "done"
    assert operation.calls == 3


def test_the_wait_grows_with_the_attempts_and_stays_under_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    operation = Flaky(6, redis.ConnectionError("down"))
    with caplog.at_level(logging.WARNING, logger=log.name):
        retrying(operation, "x", log, base=0.001, cap=0.01)
    waits = [float(r.getMessage().rsplit(" ", 1)[1].rstrip("s")) for r in caplog.records]
    assert len(waits) == 6
    # Attempt n waits at most base * 2**n: 2, 4, 8 ms, then the 10 ms cap.
    assert all(0 <= w <= min(0.01, 0.001 * 2**n) + 0.005 for n, w in enumerate(waits, 1)), waits
