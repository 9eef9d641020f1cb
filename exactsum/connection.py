"""Redis clients, and the one retry loop every Redis call of the services goes through.

redis-py can re-send a command by itself after a connection error; here its own retries are
switched off and :func:`retrying` does them instead, so that each attempt is logged once, with
exponential backoff and jitter, and so that the caller knows a reply may have been lost and can
re-synchronise (a consumer re-reads its in-flight list, for example). Every write the services
make is safe to send twice, which is what makes retrying safe at all.
"""

from __future__ import annotations

import logging
import os
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
    # Redis Cluster: the cluster is down for a slot, or no node is reachable yet (a failover
    # under way); the slot map is refreshed on the next command.
    redis.exceptions.ClusterError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.RedisClusterUnreachableError,
)


class RetryAborted(Exception):
    """Raised by :func:`retrying` when it was told to stop, or its deadline passed."""


class CredentialsError(ValueError):
    """The credentials named in the environment cannot be read."""


# Errors that end a service with exit status 2 and one line, rather than a traceback: retrying
# cannot fix them, the operator must.
FATAL_ERRORS: tuple[type[Exception], ...] = (
    CredentialsError,
    redis.AuthenticationError,
    redis.exceptions.NoPermissionError,
)


def credentials_from_env() -> dict[str, str]:
    """Username and password from ``REDIS_USERNAME`` and ``REDIS_PASSWORD_FILE`` (a Docker
    secret) or ``REDIS_PASSWORD``; they override what the URL says. Never from the command
    line, where ``ps`` would show them."""
    found: dict[str, str] = {}
    if os.environ.get("REDIS_USERNAME"):
        found["username"] = os.environ["REDIS_USERNAME"]
    path = os.environ.get("REDIS_PASSWORD_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as secret:
                found["password"] = secret.read().rstrip("\r\n")
        except OSError as exc:
            raise CredentialsError(f"REDIS_PASSWORD_FILE {path}: {exc.strerror}") from None
    elif os.environ.get("REDIS_PASSWORD"):
        found["password"] = os.environ["REDIS_PASSWORD"]
    return found


def make_client(url: str, *, socket_timeout: float, name: str | None = None) -> redis.Redis:
    """A client whose commands fail fast instead of being re-sent behind our back."""
    client: redis.Redis = redis.Redis.from_url(
        url,
        **credentials_from_env(),
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
            if isinstance(exc, redis.AuthenticationError):
                raise  # wrong credentials do not get better by waiting
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
