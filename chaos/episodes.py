"""The chaos run's fault kinds, its schedule drawn from the seed, and what each episode
became (:class:`Outcome`, summed up per kind by :class:`KindSummary`). The injector that
carries the episodes out is :mod:`chaos.faults`.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field

KINDS = ("sigkill", "sigstop", "redis", "partition", "producer")
# The RQ transport has one kind more: SIGKILL of one RQ worker process (chaos.rqview).
RQ_KINDS = (*KINDS, "rqworker")
# Over Redis Sentinel (--redis sentinel) a failover replaces the restart of the one Redis; the
# Sentinels announce loopback addresses, which a consumer in another namespace cannot reach.
SENTINEL_KINDS = ("sigkill", "sigstop", "producer", "failover")
ALL_KINDS = (*RQ_KINDS, "failover")
WEIGHTS = {"sigkill": 3, "sigstop": 3, "redis": 2, "partition": 2, "rqworker": 3, "producer": 1,
           "failover": 2}
# After a failover the old primary takes up to ~15 s to be made a replica (Sentinel looks at
# a returning node every 10 s): the next one waits for that.
FAILOVER_SPACING_S = 25.0

@dataclass(frozen=True)
class Episode:
    index: int
    at: float  # seconds after the injector starts
    kind: str
    hold: float  # sigkill: delay before the replacement; sigstop/partition: extra time away
    # after the claims were reclaimed; redis: time down
    pick: float  # in [0, 1): which of the eligible consumers

    def describe(self) -> str:
        return f"#{self.index} at {self.at:6.1f}s {self.kind:<9} hold {self.hold:4.1f}s"


def schedule(seed: int, duration: float, kinds: list[str], ttl: float) -> list[Episode]:
    """The episodes of one run: each enabled kind once early on, then random ones."""
    rng = random.Random(seed)
    first = list(kinds)
    rng.shuffle(first)
    episodes: list[Episode] = []
    t, redis_free = 2.0, 0.0
    while t < duration:
        kind = first.pop(0) if first else rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
        if kind in ("sigkill", "producer"):
            hold = rng.uniform(0.0, 2.0)
        elif kind == "redis":
            hold = rng.uniform(0.3, 1.5 * ttl)  # sometimes longer than the heartbeat TTL
        else:
            hold = rng.uniform(0.5, ttl)
        at = t
        if kind == "redis":
            at = max(at, redis_free)
            redis_free = at + hold + 2 * ttl + 5
        elif kind == "failover":
            at = max(at, redis_free)
            redis_free = at + hold + FAILOVER_SPACING_S
        if at < duration:
            episodes.append(Episode(len(episodes), round(at, 2), kind, round(hold, 2),
                                    rng.random()))
        t += rng.uniform(2.0, 6.0)
    return sorted(episodes, key=lambda e: e.at)


@dataclass
class Outcome:
    episode: Episode
    victim: str = ""
    skipped: str = ""
    landed: bool = False
    failure: str = ""
    recover_s: float | None = None
    back_s: float | None = None
    fenced: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.skipped:
            return f"{self.episode.describe()}  skipped: {self.skipped}"
        parts = [self.episode.describe(), f"victim {self.victim or '-'}",
                 "landed" if self.landed else "DID NOT LAND"]
        if self.recover_s is not None:
            parts.append(f"recovered in {self.recover_s:.2f}s")
        if self.back_s is not None:
            parts.append(f"back in {self.back_s:.2f}s")
        if self.fenced:
            parts.append(f"{self.fenced} late commits refused")
        parts += self.notes
        if self.failure:
            parts.append(f"FAILED: {self.failure}")
        return "  ".join(parts)


@dataclass
class KindSummary:
    kind: str
    injected: int
    landed: int
    failed: int
    skipped: int
    recover: list[float]
    back: list[float]
    fenced: int

    @staticmethod
    def of(kind: str, outcomes: list[Outcome]) -> KindSummary:
        mine = [o for o in outcomes if o.episode.kind == kind]
        done = [o for o in mine if not o.skipped]
        return KindSummary(
            kind, len(done), sum(o.landed for o in done), sum(bool(o.failure) for o in done),
            len(mine) - len(done),
            [o.recover_s for o in done if o.recover_s is not None],
            [o.back_s for o in done if o.back_s is not None],
            sum(o.fenced for o in done),
        )


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f}"
