"""Where the producer's numbers come from: a seeded random generator, a file, or a stream.

All are cut into batches of ``batch_size`` in sequence order; batch ``s`` holds items
``s * batch_size`` up to the next batch, and only the last batch may be short. None of them holds
its input in memory: a file is read twice, streaming (``producer_service.lines``): a first pass
validates every line, counts them, adds them up and hashes the bytes, before anything is pushed;
the second makes the batches. A stream (stdin on a pipe) cannot be read twice: it is validated as
it is read and each batch is handed on as soon as its lines are there; a bad line ends it.

Every source has a *fingerprint*: what identifies its numbers (a file's content hash, size and
line count, never its path; a random run's count, range and seed), recorded in the run's meta so
that a resumed run can be refused when its source is not the same (:mod:`exactsum.runs`).
Every source refuses a run whose running sum could leave signed 64 bits: the sum lives in a
Redis integer, whatever order the consumers add the batches in.
"""

from __future__ import annotations

import os
import random
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from exactsum.protocol import INT64_MAX, INT64_MIN
from producer_service.lines import (
    BlockReader,
    InputError,
    PipeReader,
    check_sum_bounds,
    parse_block,
    split_sums,
)

__all__ = ["FileSource", "InputError", "Interrupted", "OutBatch", "RandomSource", "Source",
           "StreamSource", "check_sum_bounds", "open_input"]

class Interrupted(Exception):
    """A signal came before anything was pushed: the producer stops, with no run made."""


# Whether batch ``seq`` is already pushed (by an earlier attempt of the run): it is not made again.
Skip = Callable[[int], bool]


def _never(seq: int) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class OutBatch:
    seq: int
    count: int
    total: int
    body: str  # the values joined by commas


def _cut(values_blocks: Iterator[list[int]], size: int, skip: Skip) -> Iterator[OutBatch]:
    """Full batches of ``size`` from blocks of values, and a short last one. A skipped batch is
    not joined into text (the expensive part), only counted past."""
    seq = 0
    pending: list[int] = []
    for values in values_blocks:
        buf = pending + values if pending else values
        start = 0
        while len(buf) - start >= size:
            if not skip(seq):
                chunk = buf[start:start + size]
                yield OutBatch(seq, size, sum(chunk), ",".join(map(str, chunk)))
            seq += 1
            start += size
        pending = buf[start:]
    if pending and not skip(seq):
        yield OutBatch(seq, len(pending), sum(pending), ",".join(map(str, pending)))


class Source:
    """What the producer needs of a source."""

    batch_size: int
    # Items in the run: known before the first push, except for a stream (None until its end).
    items: int | None
    # The exact sum of every item: final once every batch was made.
    expected_sum: int
    # Why a run of this source cannot be resumed; None if it can.
    not_resumable: str | None = None

    def fingerprint(self) -> dict[str, str]:
        raise NotImplementedError

    def batches(self, skip: Skip = _never) -> Iterator[OutBatch]:
        raise NotImplementedError


class FileSource(Source):
    """One integer per line, from a file that can be read twice (a path, or stdin redirected
    from a regular file). The constructor is the validation pass; :meth:`batches` the second."""

    def __init__(self, stream: BinaryIO, name: str, batch_size: int,
                 stop: threading.Event | None = None) -> None:
        self.stream, self.name, self.batch_size = stream, name, batch_size
        self.start = stream.tell()  # stdin may be a file opened at an offset: read from there
        reader = BlockReader(stream)
        line = 1
        positive = negative = 0
        for block in reader.blocks():
            if stop is not None and stop.is_set():
                raise Interrupted(f"{name}: interrupted while validating (line {line}); "
                                  "nothing was pushed")
            values = parse_block(block, line, name, reader.offset - len(block))
            line += len(values)
            plus, minus = split_sums(values)
            positive += plus
            negative += minus
        check_sum_bounds(positive, negative)
        self.items = line - 1
        self.expected_sum = positive + negative
        self.sha256 = reader.hasher.hexdigest()
        self.size = reader.offset

    def fingerprint(self) -> dict[str, str]:
        return {"kind": "file", "sha256": self.sha256, "bytes": str(self.size),
                "lines": str(self.items), "batch_size": str(self.batch_size)}

    def batches(self, skip: Skip = _never) -> Iterator[OutBatch]:
        self.stream.seek(self.start)
        reader = BlockReader(self.stream)
        yield from _cut(self._values(reader), self.batch_size, skip)
        if reader.hasher.hexdigest() != self.sha256 or reader.offset != self.size:
            raise InputError(f"{self.name}: changed while it was being pushed (it is not the "
                             "file that was validated); the run cannot be exact")

    def _values(self, reader: BlockReader) -> Iterator[list[int]]:
        line = 1
        for block in reader.blocks():
            values = parse_block(block, line, self.name, reader.offset - len(block))
            line += len(values)
            yield values


class StreamSource(Source):
    """One integer per line from a pipe, as it arrives. A batch is handed on when it is full;
    at the end of the input, at ``stop`` (SIGTERM: the lines read so far are the run) or at a
    bad line (``error`` says which and why; the lines before it are the run), the short last
    batch follows and the run's item count and sum are final."""

    not_resumable = "it read a stream (stdin), which cannot be read again"

    def __init__(self, fd: int, name: str, batch_size: int, stop: threading.Event) -> None:
        self.fd, self.name, self.batch_size, self.stop = fd, name, batch_size, stop
        self.items: int | None = None
        self.read = 0  # lines read and accepted so far
        self.expected_sum = 0
        self.error: str | None = None
        self.ended_by = "reading"

    def fingerprint(self) -> dict[str, str]:
        return {"kind": "stream", "batch_size": str(self.batch_size)}

    def batches(self, skip: Skip = _never) -> Iterator[OutBatch]:
        yield from _cut(self._values(), self.batch_size, skip)
        self.items = self.read

    def _values(self) -> Iterator[list[int]]:
        reader = PipeReader(self.fd, self.stop)
        positive = negative = 0
        for block in reader.blocks():
            try:
                values = parse_block(block, self.read + 1, self.name, reader.offset - len(block))
            except InputError as exc:
                # The good lines before the bad one are still the run's.
                values, self.error = exc.good, str(exc)
            plus, minus = split_sums(values)
            if positive + plus > INT64_MAX or negative + minus < INT64_MIN:
                values, overflow = _until_overflow(values, positive, negative)
                self.error = (f"{self.name}: line {self.read + len(values) + 1}: {overflow} would "
                              "take the run's sum past signed 64 bits")
                plus, minus = split_sums(values)
            positive, negative = positive + plus, negative + minus
            self.read += len(values)
            self.expected_sum = positive + negative
            if values:
                yield values
            if self.error is not None:
                self.ended_by = "bad line"
                return
        self.ended_by = "signal" if reader.stopped else "end of input"
        if reader.dropped:
            sys.stderr.write(f"producer: {self.name}: an unfinished last line "
                             f"({reader.dropped} bytes without a newline) was not read\n")


def _until_overflow(values: list[int], positive: int, negative: int) -> tuple[list[int], int]:
    """The values that keep the positive and negative totals within 64 bits, and the first
    that does not."""
    for i, value in enumerate(values):
        if value > 0:
            positive += value
        else:
            negative += value
        if positive > INT64_MAX or negative < INT64_MIN:
            return values[:i], value
    raise AssertionError("no value overflows")


class RandomSource(Source):
    """``items`` random integers in ``[low, high]``, the same ones for the same seed.

    The expected sum is the sum of what is generated, so ``expected_sum`` is final only once
    every batch is made (a resumed run makes the batches already pushed again, without pushing
    them, for that); the bounds check uses the worst case instead. Not thread-safe: the
    pusher draws batches under its own lock, which also keeps a seed's numbers in one order.
    """

    items: int

    def __init__(self, items: int, low: int, high: int, seed: int | None, batch_size: int) -> None:
        if low > high:
            raise InputError(f"--min {low} is greater than --max {high}")
        for name, value in (("--min", low), ("--max", high)):
            if not INT64_MIN <= value <= INT64_MAX:
                raise InputError(f"{name} {value} is outside signed 64 bits")
        check_sum_bounds(items * max(high, 0), items * min(low, 0))
        self.items, self.low, self.high, self.seed = items, low, high, seed
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        if seed is None:
            self.not_resumable = "its numbers were random without --seed and cannot be made again"
        # choices() over a small range is several times faster than randint() per item, and
        # a table of the values' text saves a str() per item.
        span = high - low + 1
        self._table = [str(v) for v in range(low, high + 1)] if span <= 4096 else None
        self.expected_sum = 0

    def fingerprint(self) -> dict[str, str]:
        return {"kind": "random", "count": str(self.items), "min": str(self.low),
                "max": str(self.high), "seed": "none" if self.seed is None else str(self.seed),
                "batch_size": str(self.batch_size)}

    def batches(self, skip: Skip = _never) -> Iterator[OutBatch]:
        size = self.batch_size
        rng = self.rng
        for seq, start in enumerate(range(0, self.items, size)):
            count = min(size, self.items - start)
            if self._table is not None:
                picks = rng.choices(range(len(self._table)), k=count)
                table = self._table
                total = sum(picks) + self.low * count
                body = "" if skip(seq) else ",".join([table[i] for i in picks])
            else:
                values = [rng.randint(self.low, self.high) for _ in range(count)]
                total = sum(values)
                body = "" if skip(seq) else ",".join(map(str, values))
            self.expected_sum += total
            if body:
                yield OutBatch(seq, count, total, body)


def open_input(path: str, batch_size: int, stop: threading.Event) -> Source:
    """``--input PATH``: a file; ``-`` is stdin, read twice like a file when it is one (``<
    numbers.txt``), streamed otherwise (a pipe, a terminal, a socket)."""
    if path == "-":
        if stat.S_ISREG(os.fstat(0).st_mode):
            return FileSource(os.fdopen(0, "rb", closefd=False), "stdin", batch_size, stop)
        return StreamSource(0, "stdin", batch_size, stop)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - read twice, closed at exit
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):  # a named pipe: streamed
        return StreamSource(os.dup(stream.fileno()), path, batch_size, stop)
    return FileSource(stream, path, batch_size, stop)
