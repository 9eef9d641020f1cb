"""Push-to-commit latency: a fixed-size histogram per worker, summarised at exit.

Each element carries the producer's wall clock when it was made (``Batch.pushed_us``); a worker
records ``now - pushed_us`` for every batch it counts, once per item of the batch. Buckets are
logarithmic, 32 to each doubling (under 2.2 % apart), from 1 microsecond to over an hour, so the
memory is fixed whatever the number of items and a percentile is known to within a bucket.
Latency across machines is only as good as their clocks' agreement; on one machine it is exact.

Each worker has its own :class:`LatencyHistogram` (no lock on the hot path); the service merges
them at exit and, with ``--stats-file``, writes :func:`summary` as JSON.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from typing import Any

SUB_BUCKETS = 32  # per doubling
MAX_EXPONENT = 32  # 2^32 us, about 71 minutes; slower is counted in the last bucket
BUCKETS = SUB_BUCKETS * MAX_EXPONENT + 1


def bucket_of(latency_us: int) -> int:
    if latency_us <= 1:
        return 0
    return min(int(math.log2(latency_us) * SUB_BUCKETS), BUCKETS - 1)


def bucket_upper_us(index: int) -> float:
    """The (exclusive) upper bound, in microseconds, of bucket ``index``."""
    return float(2 ** ((index + 1) / SUB_BUCKETS))


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.items = 0
        self.batches = 0
        self.total_us = 0  # items x latency, for the mean
        self.max_us = 0
        self.negative = 0  # batches stamped in the future (clocks out of step): counted as 0

    def record(self, latency_us: int, items: int) -> None:
        if latency_us < 0:
            self.negative += 1
            latency_us = 0
        self.counts[bucket_of(latency_us)] += items
        self.items += items
        self.batches += 1
        self.total_us += latency_us * items
        if latency_us > self.max_us:
            self.max_us = latency_us

    def merge(self, other: LatencyHistogram) -> None:
        for i, n in enumerate(other.counts):
            if n:
                self.counts[i] += n
        self.items += other.items
        self.batches += other.batches
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)
        self.negative += other.negative

    @classmethod
    def merged(cls, parts: Iterable[LatencyHistogram]) -> LatencyHistogram:
        out = cls()
        for part in parts:
            out.merge(part)
        return out

    def percentile_us(self, fraction: float) -> float | None:
        """The latency under which ``fraction`` of the items were committed (bucket bound)."""
        if not self.items:
            return None
        rank = max(1, math.ceil(fraction * self.items))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(bucket_upper_us(index), float(self.max_us))
        return float(self.max_us)

    def sparse(self) -> dict[str, int]:
        """The non-empty buckets, ``{index: items}``, so that summaries can be merged exactly."""
        return {str(i): n for i, n in enumerate(self.counts) if n}

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> LatencyHistogram:
        """Rebuild a histogram from :meth:`summary` (percentiles of several files are merged so)."""
        out = cls()
        for index, n in summary.get("buckets", {}).items():
            out.counts[int(index)] += int(n)
        out.items = int(summary.get("items", 0))
        out.batches = int(summary.get("batches", 0))
        mean = summary.get("mean_ms")
        out.total_us = round(mean * 1000 * out.items) if mean is not None else 0
        max_ms = summary.get("max_ms")
        out.max_us = round(max_ms * 1000) if max_ms is not None else 0
        out.negative = int(summary.get("clock_skew_batches", 0))
        return out

    def summary(self) -> dict[str, Any]:
        def ms(us: float | None) -> float | None:
            return None if us is None else round(us / 1000, 3)

        return {
            "items": self.items,
            "batches": self.batches,
            "mean_ms": ms(self.total_us / self.items) if self.items else None,
            "p50_ms": ms(self.percentile_us(0.50)),
            "p90_ms": ms(self.percentile_us(0.90)),
            "p99_ms": ms(self.percentile_us(0.99)),
            "p999_ms": ms(self.percentile_us(0.999)),
            "max_ms": ms(float(self.max_us)) if self.items else None,
            "clock_skew_batches": self.negative,
            "buckets": self.sparse(),
        }


def write_stats(path: str, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(record, out)
        out.write("\n")
    os.replace(tmp, path)
