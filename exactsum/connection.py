"""Redis clients, and the one retry loop every Redis call of the services goes through.

redis-py can re-send a command by itself after a connection error; here its own retries are
switched off and :func:`retrying` does them instead, so that each attempt is logged once, with
exponential backoff and jitter, and so that the caller knows a reply may have been lost and can
re-synchronise (a consumer re-reads its in-flight list, for example). Every write the services
make is safe to send twice, which is what makes retrying safe at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

T = TypeVar("T")

# BusyLoadingError (Redis still loading its AOF after a restart) is a ConnectionError subclass.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
)


class RetryAborted(Exception):
    """Raised by :func:`retrying` when it was told to stop, or its deadline passed."""


def make_client(url: str, *, socket_timeout: float, name: str | None = None) -> redis.Redis:
    """A client whose commands fail fast instead of being re-sent behind our back."""
    client: redis.Redis = redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout, 5.0),
        socket_keepalive=True,
        health_check_interval=0,
        retry=Retry(ExponentialWithJitterBackoff(), 0),
        client_name=name,
    )
    return client


def retrying(
    operation: Callable[[], T],
    what: str,
    log: logging.Logger,
    *,
    stop: threading.Event | None = None,
    deadline: float | None = None,
    on_error: Callable[[], None] | None = None,
    base: float = 0.05,
    cap: float = 5.0,
) -> T:
    """Call ``operation`` until it succeeds, sleeping with backoff between failed attempts.

    ``on_error`` runs after each failure (before the sleep): the place to note that a reply was
    lost. Gives up with :class:`RetryAborted` only when ``stop`` is set or ``deadline`` (a
    ``time.monotonic()`` value) has passed.
    """
    backoff = ExponentialWithJitterBackoff(base=base, cap=cap)
    attempt = 0
    while True:
        try:
            return operation()
        except TRANSIENT_ERRORS as exc:
            attempt += 1
            delay = backoff.compute(attempt)
            log.warning(
                "redis: %s failed (%s: %s); attempt %d, retrying in %.2fs",
                what,
                type(exc).__name__,
                exc,
                attempt,
                delay,
            )
            if on_error is not None:
                on_error()
            if deadline is not None and time.monotonic() + delay > deadline:
                raise RetryAborted(f"{what}: deadline passed after {attempt} attempts") from exc
            if stop is not None:
                if stop.wait(delay):
                    raise RetryAborted(f"{what}: stopped after {attempt} attempts") from exc
            else:
                time.sleep(delay)
