"""The Lua scripts, loaded once from their ``.lua`` files and registered with redis-py.

``register_script`` sends EVALSHA and falls back to loading the script when Redis answers
NOSCRIPT, which is what happens after a Redis restart flushed the script cache.

The scripts' status codes are the enums below, one per family of scripts that share codes; each
script's header in ``lua/`` says which values it returns and what they mean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum
from importlib import resources

import redis
from redis.commands.core import Script


class Commit(IntEnum):
    """A batch's status from ``commit.lua`` (one per batch) and ``commit_job.lua``."""

    COUNTED = 1
    ALREADY_COUNTED = 0  # already resolved: counted or dead-lettered before; nothing added
    FENCED = -1  # the claim or the lease is no longer the committer's; nothing written
    UNKNOWN_RUN = -2  # no such run (expired, or never made); the caller dead-letters it
    OVERFLOW = -3  # the run's sum would leave signed 64 bits; the caller dead-letters it


class DeadLetter(IntEnum):
    """``dead_letter.lua``, ``dead_letter_job.lua`` and ``dead_letter_foreign.lua``."""

    DEAD_LETTERED = 1
    ALREADY_RESOLVED = 0  # counted or dead-lettered before (never from dead_letter_foreign)
    FENCED = -1  # the claim or the lease is no longer ours


class Retry(IntEnum):
    """``retry.lua``: what became of a batch whose processing failed."""

    REQUEUED = 1
    ATTEMPTS_USED_UP = 2  # still claimed: the caller dead-letters it
    ALREADY_RESOLVED = 0
    FENCED = -1


class ReclaimJob(IntEnum):
    """``reclaim_job.lua``: what became of a dead RQ worker's execution."""

    REQUEUED = 1
    DEAD_LETTERED = 2  # no retries were left
    NOTHING = 0  # resolved already, not ours, or handled by another consumer


class Moved(IntEnum):
    """``requeue_dead.lua``, ``drop_dead.lua`` and ``rescue_job.lua``: did the one thing move."""

    MOVED = 1
    GONE = 0  # it was no longer there: someone else handled it


def _source(name: str) -> str:
    return resources.files("exactsum").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def register_one(client: redis.Redis, name: str) -> Script:
    """The script of ``lua/<name>.lua`` alone, for a helper that has a client and no
    :class:`Scripts` (``exactsum.runs``: ``raise_epoch``)."""
    return client.register_script(_source(name))


@dataclass(frozen=True)
class Scripts:
    push: Script
    claim: Script
    commit: Script
    dead_letter: Script
    dead_letter_foreign: Script
    reclaim: Script
    retry: Script
    requeue_dead: Script
    drop_dead: Script
    commit_job: Script
    dead_letter_job: Script
    reclaim_job: Script
    rescue_job: Script

    @classmethod
    def register(cls, client: redis.Redis,
                 make: Callable[[str], Script] | None = None) -> Scripts:
        """Each field is registered from the ``.lua`` file of its name, by ``make`` if given
        (Redis Cluster: :class:`exactsum.cluster.AckedScript`)."""
        make = make or client.register_script
        return cls(**{f.name: make(_source(f.name)) for f in fields(cls)})
