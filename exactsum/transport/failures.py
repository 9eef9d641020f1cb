"""Simulated processing failures, for tests and demos of retries and dead letters.

``--fail-rate`` makes that share of items *poison*: they fail on every attempt, chosen by a hash
of the item's identity so that every consumer agrees. ``--flaky-rate`` makes that share of
processing attempts fail once, at random: a retry usually succeeds. A batch fails if any of its
items fails; it is retried up to ``--max-attempts`` and then dead-lettered with the reasons.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

from exactsum.protocol import Batch

_SCALE = 2**32


@dataclass
class FailureInjector:
    fail_rate: float = 0.0
    flaky_rate: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    @property
    def active(self) -> bool:
        return bool(self.fail_rate or self.flaky_rate)

    def failures(self, batch: Batch) -> list[str]:
        """Why this attempt at the batch fails; empty when it succeeds."""
        reasons = []
        if self.fail_rate:
            threshold = self.fail_rate * _SCALE
            prefix = f"{batch.run_id}:{batch.seq}:".encode()
            for index, value in enumerate(batch.values):
                if zlib.crc32(prefix + str(index).encode()) < threshold:
                    reasons.append(f"item {batch.seq}:{index} (value {value}) is poison")
        if self.flaky_rate and self.rng.random() < self.flaky_rate:
            reasons.append("transient failure")
        return reasons
