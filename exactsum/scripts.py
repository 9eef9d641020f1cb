"""The Lua scripts, loaded once from their ``.lua`` files and registered with redis-py.

``register_script`` sends EVALSHA and falls back to loading the script when Redis answers
NOSCRIPT, which is what happens after a Redis restart flushed the script cache.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            push=client.register_script(_source("push")),
            claim=client.register_script(_source("claim")),
            commit=client.register_script(_source("commit")),
            dead_letter=client.register_script(_source("dead_letter")),
            dead_letter_foreign=client.register_script(_source("dead_letter_foreign")),
            reclaim=client.register_script(_source("reclaim")),
            retry=client.register_script(_source("retry")),
            requeue_dead=client.register_script(_source("requeue_dead")),
            drop_dead=client.register_script(_source("drop_dead")),
            commit_job=client.register_script(_source("commit_job")),
            dead_letter_job=client.register_script(_source("dead_letter_job")),
            reclaim_job=client.register_script(_source("reclaim_job")),
        )
