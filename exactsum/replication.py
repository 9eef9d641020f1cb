"""Acknowledged writes: a write counts as done only once enough replicas have it.

Redis replicates asynchronously. A primary that dies after it answered a write, before any
replica received it, takes the write with it when Sentinel promotes a replica: the client was
told "done" about something the new primary never saw. ``WAIT n timeout`` closes most of that
gap: it blocks until ``n`` replicas acknowledged every write that the *same connection* made
before it, and answers how many did. Inside MULTI or a Lua script it returns at once, so it is
sent right after the write, in one non-transactional pipeline, which redis-py sends on one
connection.

When WAIT counts fewer than ``min_replicas`` replicas, the write is treated exactly like a
write whose reply was lost: :class:`NotAcknowledged` is one of the errors that
:func:`exactsum.connection.retrying` retries, so the caller re-synchronises (its ``on_error``)
and sends the write again. Every script of this project is safe to send again, whether the first
call survived the failover or not: the pushed and done bitmaps make a push and a commit happen
at most once, and a claim is fenced by the in-flight list that holds it (see docs/sentinel.md
for the argument, script by script).

``min_replicas`` 0 (the default) sends no WAIT at all: the calls are exactly what they were.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script

Key = str | bytes
Arg = str | bytes | int | float


class NotAcknowledged(redis.RedisError):
    """WAIT counted fewer replicas than required: the write may be lost in a failover.

    ``replies`` are the writes' own replies, which hold as long as no failover undoes them.
    """

    def __init__(self, message: str, replies: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.replies = list(replies)


@dataclass(frozen=True)
class Replication:
    """How many replicas must acknowledge a write before it counts (``--min-replicas``) and how
    long to wait for them (``--replica-timeout``)."""

    min_replicas: int = 0
    timeout_s: float = 2.0

    @property
    def enabled(self) -> bool:
        return self.min_replicas > 0

    @property
    def timeout_ms(self) -> int:
        return max(1, round(self.timeout_s * 1000))

    def execute(self, pipe: Pipeline) -> list[Any]:
        """Execute a non-transactional pipeline of writes, followed by WAIT on its connection;
        the replies of the writes. Raises :class:`NotAcknowledged` when too few replicas have
        them (the writes themselves were carried out on the primary)."""
        if not self.enabled:
            return list(pipe.execute())
        pipe.wait(self.min_replicas, self.timeout_ms)
        *replies, acknowledged = pipe.execute()
        if int(acknowledged) < self.min_replicas:
            raise NotAcknowledged(
                f"WAIT: {acknowledged} of {self.min_replicas} replicas acknowledged the write "
                f"within {self.timeout_s:g} s", replies)
        return replies

    def script(self, script: Script, keys: Sequence[Key], args: Sequence[Arg],
               client: redis.Redis | None = None) -> Any:
        """``script(keys=keys, args=args)``, acknowledged. Like redis-py's own call, it loads the
        script once when Redis does not know it (after a restart or on a promoted replica)."""
        if not self.enabled:
            return script(keys=keys, args=args, client=client)
        target: redis.Redis = client or script.registered_client  # type: ignore[assignment]
        for loaded in (False, True):
            pipe = target.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                return self.execute(pipe)[0]
            except redis.exceptions.NoScriptError:
                if loaded:
                    raise
                target.script_load(script.script)
        raise AssertionError("unreachable")

    def barrier(self, client: redis.Redis, key: str, field: str = "acknowledged_ms") -> None:
        """Wait until the replicas have every write the primary took before this call, from any
        connection: a small write of our own (``field`` of the hash ``key``), then WAIT. The
        replication stream is one ordered log, so its acknowledgement covers all that came
        before it: the MULTI of an RQ push, or the commits a producer saw before its audit."""
        if not self.enabled:
            return
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, field, int(time.time() * 1000))
        self.execute(pipe)


NO_REPLICATION = Replication()


def replication_of(script: object) -> Replication:
    """The acknowledgement rule a registered script follows (:class:`AcknowledgedScript`,
    :class:`exactsum.cluster.AckedScript`); :data:`NO_REPLICATION` for a plain one. For writes
    that go beside the scripts (an RQ enqueue's MULTI/EXEC) by code that is handed only the
    scripts."""
    found = getattr(script, "replication", NO_REPLICATION)
    return found if isinstance(found, Replication) else NO_REPLICATION


class AcknowledgedScript(Script):
    """A script on one primary (at a URL or under Sentinel) whose every call is followed by WAIT
    on its connection (:meth:`Replication.script`); registered by
    :func:`exactsum.cluster.register_scripts` when ``--min-replicas`` is set, so that callers
    call it like any script. On a cluster, :class:`exactsum.cluster.AckedScript` does the same
    on the slot's primary."""

    def __init__(self, client: redis.Redis, source: str, replication: Replication) -> None:
        super().__init__(client, source)
        self.replication = replication

    def __call__(self, keys: Sequence[Any] | None = None, args: Iterable[Any] | None = None,
                 client: Any = None) -> Any:
        if not self.replication.enabled:
            return super().__call__(keys=keys, args=args, client=client)
        return self.replication.script(self, list(keys or []), list(args or []), client)
