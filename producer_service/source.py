"""Where the producer's numbers come from: a seeded random generator, or a file of integers.

Both are cut into batches of ``batch_size`` in sequence order; batch ``s`` holds items
``s * batch_size`` up to the next batch. Both know their item count and exact sum before the first
push, and both refuse, before anything is pushed, a run whose running sum could leave signed
64 bits: the sum lives in a Redis integer, whatever order the consumers add the batches in.
"""

from __future__ import annotations

import random
import re
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from exactsum.protocol import INT64_MAX, INT64_MIN


class InputError(ValueError):
    """Bad input: the message says which line, which value and why."""


@dataclass(frozen=True, slots=True)
class OutBatch:
    seq: int
    count: int
    total: int
    body: str  # the values joined by commas


_INTEGER_LINE = re.compile(r"^[+-]?[0-9]+$")


def check_sum_bounds(positive_total: int, negative_total: int) -> None:
    """Refuse a run whose partial sums could leave signed 64 bits in some order of commits."""
    if positive_total > INT64_MAX:
        raise InputError(
            f"the positive values add up to {positive_total}, past the signed 64-bit maximum "
            f"{INT64_MAX}: the run's sum is a Redis integer; split the input into several runs"
        )
    if negative_total < INT64_MIN:
        raise InputError(
            f"the negative values add up to {negative_total}, past the signed 64-bit minimum "
            f"{INT64_MIN}: the run's sum is a Redis integer; split the input into several runs"
        )


class FileSource:
    """One integer per line; the whole input is validated before anything is pushed."""

    def __init__(self, stream: IO[str], name: str, batch_size: int) -> None:
        self.batch_size = batch_size
        self.values = array("q")
        positive = negative = 0
        for number, line in enumerate(stream, start=1):
            text = line.strip()
            if not text:
                raise InputError(f"{name}: line {number}: empty line, expected an integer")
            if not _INTEGER_LINE.match(text):
                raise InputError(f"{name}: line {number}: {_shown(text)} is not an integer")
            value = int(text)
            if not INT64_MIN <= value <= INT64_MAX:
                raise InputError(
                    f"{name}: line {number}: {_shown(text)} is outside signed 64 bits "
                    f"[{INT64_MIN}, {INT64_MAX}]"
                )
            if value > 0:
                positive += value
            else:
                negative += value
            self.values.append(value)
        check_sum_bounds(positive, negative)
        self.items = len(self.values)
        self.expected_sum = positive + negative

    @classmethod
    def open(cls, path: str, batch_size: int) -> FileSource:
        if path == "-":
            return cls(sys.stdin, "stdin", batch_size)
        try:
            with open(path, encoding="utf-8") as stream:
                return cls(stream, path, batch_size)
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror}") from None

    def batches(self) -> Iterator[OutBatch]:
        size = self.batch_size
        for seq, start in enumerate(range(0, self.items, size)):
            chunk = self.values[start : start + size]
            yield OutBatch(seq, len(chunk), sum(chunk), ",".join(map(str, chunk)))


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class RandomSource:
    """``items`` random integers in ``[low, high]``, the same ones for the same seed.

    The expected sum is the sum of what is generated, so ``expected_sum`` is final only once
    every batch is made; the bounds check uses the worst case instead. Not thread-safe: the
    pusher draws batches under its own lock, which also keeps a seed's numbers in one order.
    """

    def __init__(self, items: int, low: int, high: int, seed: int | None, batch_size: int) -> None:
        if low > high:
            raise InputError(f"--min {low} is greater than --max {high}")
        for name, value in (("--min", low), ("--max", high)):
            if not INT64_MIN <= value <= INT64_MAX:
                raise InputError(f"{name} {value} is outside signed 64 bits")
        check_sum_bounds(items * max(high, 0), items * min(low, 0))
        self.items, self.low, self.high = items, low, high
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        # choices() over a small range is several times faster than randint() per item, and
        # a table of the values' text saves a str() per item.
        span = high - low + 1
        self._table = [str(v) for v in range(low, high + 1)] if span <= 4096 else None
        self.expected_sum = 0

    def batches(self) -> Iterator[OutBatch]:
        size = self.batch_size
        rng = self.rng
        for seq, start in enumerate(range(0, self.items, size)):
            count = min(size, self.items - start)
            if self._table is not None:
                picks = rng.choices(range(len(self._table)), k=count)
                table = self._table
                body = ",".join([table[i] for i in picks])
                total = sum(picks) + self.low * count
            else:
                values = [rng.randint(self.low, self.high) for _ in range(count)]
                body = ",".join(map(str, values))
                total = sum(values)
            self.expected_sum += total
            yield OutBatch(seq, count, total, body)
