"""Every Redis key name the services use, in one place.

The layout (prefix ``pc`` by default, see ``KEY_PREFIX``)::

    pc:queue                       list    messages waiting (LPUSH; consumers take the right end)
    pc:inflight:<consumer>:<n>     list    messages claimed by thread <n> of one consumer process
    pc:consumer:<consumer>         string  heartbeat (JSON facts about the process), with a TTL
    pc:consumers                   zset    consumer id -> last heartbeat (ms); for status only
    pc:dead                        list    dead letters that belong to no run (foreign elements)
    pc:stats:reclaimed             string  messages moved back to the queue from dead consumers
    pc:runs                        zset    run id -> start time (ms)
    pc:run:<id>:meta               hash    what the producer pushed: items, expected sum, batches...
    pc:run:<id>:pushed             bitmap  batch numbers already pushed (idempotent pushes)
    pc:run:<id>:done               bitmap  batch numbers resolved (committed or dead-lettered)
    pc:run:<id>:sum                string  the committed sum
    pc:run:<id>:committed          string  items committed
    pc:run:<id>:dead_items         string  items dead-lettered
    pc:run:<id>:dead               list    the run's dead letters (JSON: reason, message, consumer)
    pc:run:<id>:by_consumer        hash    consumer id -> items it committed
    pc:run:<id>:stale              string  commits refused because the claim or the batch was no
                                           longer the committer's (late returners, re-sent commits)
    pc:run:<id>:attempts           hash    batch number -> failed processing attempts so far
    pc:run:<id>:dropped            list    dead letters an operator dropped (still accounted)
    pc:dropped                     list    dropped dead letters of no run

The ``<consumer>`` and ``<id>`` parts never contain ``:``, so a key splits back into its parts.
"""

from __future__ import annotations

from dataclasses import dataclass

RUN_KEY_SUFFIXES = (
    "meta",
    "pushed",
    "done",
    "sum",
    "committed",
    "dead_items",
    "dead",
    "by_consumer",
    "stale",
    "attempts",
    "dropped",
)


@dataclass(frozen=True)
class RunKeys:
    """The keys of one run."""

    meta: str
    pushed: str
    done: str
    sum: str
    committed: str
    dead_items: str
    dead: str
    by_consumer: str
    stale: str
    attempts: str
    dropped: str

    def all(self) -> list[str]:
        return [getattr(self, name) for name in RUN_KEY_SUFFIXES]


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix; build one per process and pass it around."""

    prefix: str = "pc"

    @property
    def queue(self) -> str:
        return f"{self.prefix}:queue"

    @property
    def consumers(self) -> str:
        return f"{self.prefix}:consumers"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def dropped(self) -> str:
        return f"{self.prefix}:dropped"

    @property
    def reclaimed(self) -> str:
        return f"{self.prefix}:stats:reclaimed"

    @property
    def runs(self) -> str:
        return f"{self.prefix}:runs"

    def heartbeat(self, consumer_id: str) -> str:
        return f"{self.prefix}:consumer:{consumer_id}"

    def inflight(self, consumer_id: str, thread: int) -> str:
        return f"{self.prefix}:inflight:{consumer_id}:{thread}"

    @property
    def inflight_pattern(self) -> str:
        """SCAN pattern that finds every in-flight list, whoever owns it."""
        return f"{self.prefix}:inflight:*"

    def inflight_owner(self, inflight_key: str) -> str:
        """The consumer id inside an in-flight list's name."""
        rest = inflight_key[len(self.prefix) + len(":inflight:") :]
        return rest.rsplit(":", 1)[0]

    def run(self, run_id: str) -> RunKeys:
        base = f"{self.prefix}:run:{run_id}"
        return RunKeys(**{name: f"{base}:{name}" for name in RUN_KEY_SUFFIXES})
