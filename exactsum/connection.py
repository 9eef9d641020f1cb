"""Redis clients, and the one retry loop every Redis call of the services goes through.

redis-py can re-send a command by itself after a connection error; here its own retries are
switched off and :func:`retrying` does them instead, so that each attempt is logged once, with
exponential backoff and jitter, and so that the caller knows a reply may have been lost and can
re-synchronise (a consumer re-reads its in-flight list, for example). Every write the services
make is safe to send twice, which is what makes retrying safe at all.

Where Redis is comes from :class:`RedisTarget` (``--redis-url``; or ``--redis-sentinels`` and
``--redis-sentinel-master`` for a primary that Redis Sentinel fails over; or ``--redis-cluster``).
:func:`exactsum.cluster.connect` is the one place that turns it into a client: a cluster client,
or :func:`make_client` for one primary, found by URL or through the Sentinels.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import tenacity
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from exactsum import counters
from exactsum.counters import Event
from exactsum.replication import NotAcknowledged

T = TypeVar("T")

# BusyLoadingError (Redis still loading its AOF after a restart) is a ConnectionError subclass.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
    # WAIT counted too few replicas (exactsum.replication): the write may be lost in a failover,
    # so it is sent again, as after a lost reply.
    NotAcknowledged,
    # Redis Cluster: the cluster is down for a slot, or no node is reachable yet (a failover
    # under way); the slot map is refreshed on the next command.
    redis.exceptions.ClusterError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.RedisClusterUnreachableError,
    # Redis Cluster: MOVED or ASK that redis-py did not follow itself (a WATCH or MULTI of a
    # transaction, which it leaves to the caller): the command was not run, and redis-py has
    # patched its slot map from the reply, so the next attempt goes where the slot is now.
    redis.exceptions.AskError,
)
# Error replies that mean "not now" rather than "never": a primary with min-replicas-to-write
# that has too few replicas (cut off, or during a failover), and a replica that lost its primary.
TRANSIENT_REPLY_PREFIXES = ("NOREPLICAS", "MASTERDOWN")


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


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: a URL, a set of Sentinels that name the primary, or a Redis Cluster.

    With ``sentinels``, the URL's host and port are not used; its scheme (``rediss://`` for
    TLS, with its ``ssl_*`` parameters), database and credentials still are, for the primary
    and for the Sentinels alike. ``cluster`` is ``--redis-cluster``: "" (no cluster), "1" (the
    URL is a node of one) or a node's URL.
    """

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    cluster: str = ""

    def __post_init__(self) -> None:
        if self.cluster and self.sentinels:
            raise ValueError("--redis-cluster and --redis-sentinels exclude each other (a "
                             "cluster fails over by itself)")

    def describe(self) -> str:
        if self.sentinels:
            where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"primary {self.sentinel_master!r} of the Sentinels {where}"
        if self.cluster:
            return f"the Redis Cluster of {self.url if self.cluster == '1' else self.cluster}"
        return self.url


def make_client(target: RedisTarget | str, *, socket_timeout: float,
                name: str | None = None) -> redis.Redis:
    """A client whose commands fail fast instead of being re-sent behind our back.

    With Sentinels it is redis-py's ``Sentinel(...).master_for(...)``: each new connection asks
    the Sentinels where the primary is, and a connection that meets a demoted primary (READONLY)
    or a dead one is dropped with a ConnectionError, which :func:`retrying` retries; its next
    connection asks the Sentinels again.
    """
    if isinstance(target, str):
        target = RedisTarget(target)
    if target.cluster:
        raise ValueError("make_client serves one primary; exactsum.cluster.connect a cluster")
    options: dict[str, Any] = {
        **credentials_from_env(),
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(socket_timeout, 5.0),
        "socket_keepalive": True,
        "health_check_interval": 0,
        "retry": Retry(ExponentialWithJitterBackoff(), 0),
        "client_name": name,
    }
    if target.sentinels:
        return _sentinel_client(target, options)
    client: redis.Redis = redis.Redis.from_url(target.url, **options)
    return client


def _sentinel_client(target: RedisTarget, options: dict[str, Any]) -> redis.Redis:
    from_url: dict[str, Any] = parse_url(target.url)  # type: ignore[no-untyped-call]
    from_url.pop("host", None)
    from_url.pop("port", None)
    if from_url.pop("connection_class", None) is SSLConnection:
        from_url["ssl"] = True
    # The URL's credentials and TLS settings, then the environment's credentials over them.
    node_options = {**from_url, **options}
    # The Sentinels speak TLS when the nodes do; they have credentials of their own, if any
    # (Sentinel's requirepass and users are not the nodes').
    sentinel_options = {k: v for k, v in node_options.items()
                        if k.startswith(("socket_", "ssl"))}
    if os.environ.get("REDIS_SENTINEL_USERNAME"):
        sentinel_options["username"] = os.environ["REDIS_SENTINEL_USERNAME"]
    if os.environ.get("REDIS_SENTINEL_PASSWORD"):
        sentinel_options["password"] = os.environ["REDIS_SENTINEL_PASSWORD"]
    # A Sentinel that does not answer is skipped at once by redis-py; no re-sends there either.
    sentinel_options["retry"] = Retry(ExponentialWithJitterBackoff(), 0)
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options, **node_options)
    client: redis.Redis = manager.master_for(target.sentinel_master)
    return client


def transient_reply(exc: redis.ResponseError) -> bool:
    """An error reply that means "not now" (:data:`TRANSIENT_REPLY_PREFIXES`), also when
    redis-py has prefixed it with the pipeline command it answered."""
    text = str(exc)
    _, marker, reply = text.partition("of pipeline caused error: ")
    return (reply if marker else text).startswith(TRANSIENT_REPLY_PREFIXES)


def transient(exc: BaseException) -> bool:
    """A fault that waiting may cure (:data:`TRANSIENT_ERRORS`, :func:`transient_reply`); wrong
    credentials are a ConnectionError too, but do not get better by waiting."""
    if isinstance(exc, redis.AuthenticationError):
        return False
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, redis.ResponseError) and transient_reply(exc)


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

    Retries :func:`transient` faults only; any other error is raised at once. Attempt n waits a
    random share of ``base * 2**n`` seconds, at most ``cap``, and is logged once at WARNING.
    ``on_error`` runs after each failure (before the sleep): the place to note that a reply was
    lost. Gives up with :class:`RetryAborted` only when ``stop`` is set or ``deadline`` (a
    ``time.monotonic()`` value) would pass during the next sleep.
    """
    # The first attempt runs outside tenacity: nearly every call succeeds at once, and a Redis
    # round trip should not pay for building a Retrying object (tens of microseconds).
    try:
        return operation()
    except BaseException as exc:
        if not transient(exc):
            raise
        first: BaseException | None = exc
    failed, attempts = first, 1  # the last failure and its attempt's number, for RetryAborted

    def attempt() -> T:
        # tenacity's attempt 1 is the call that already failed: it raises that failure again,
        # so that the log, on_error and the backoff count it like any other.
        nonlocal first
        if first is not None:
            replay, first = first, None
            raise replay
        return operation()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        nonlocal failed, attempts
        error = state.outcome.exception() if state.outcome else None
        assert error is not None and state.next_action is not None
        failed, attempts = error, state.attempt_number
        delay = state.next_action.sleep
        counters.incr(Event.REDIS_RETRY)
        if isinstance(error, redis.exceptions.TryAgainError):
            counters.incr(Event.REDIS_RETRY_TRYAGAIN)
        log.warning("redis: %s failed (%s: %s); attempt %d, retrying in %.2fs", what,
                    type(error).__name__, error, state.attempt_number, delay)
        if on_error is not None:
            on_error()
        if deadline is not None and time.monotonic() + delay > deadline:
            raise RetryAborted(f"{what}: deadline passed after {state.attempt_number} "
                               "attempts") from error

    def sleep(delay: float) -> None:
        if stop is None:
            time.sleep(delay)
        elif stop.wait(delay):
            raise RetryAborted(f"{what}: stopped after {attempts} attempts") from failed

    # The backoff redis-py's own Retry would use: a random share of base * 2**n, at most cap.
    backoff = ExponentialWithJitterBackoff(base=base, cap=cap)
    retry = tenacity.Retrying(
        retry=tenacity.retry_if_exception(transient),
        wait=lambda state: backoff.compute(state.attempt_number),
        before_sleep=before_sleep, sleep=sleep, reraise=True)
    return retry(attempt)
