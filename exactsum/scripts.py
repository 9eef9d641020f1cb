"""The Lua scripts, loaded once from their ``.lua`` files and registered with redis-py.

``register_script`` sends EVALSHA and falls back to loading the script when Redis answers
NOSCRIPT, which is what happens after a Redis restart flushed the script cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib import resources

import redis
from redis.commands.core import Script


def _source(name: str) -> str:
    return resources.files("exactsum").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


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
