"""Lines of integers read in blocks, in constant memory: the producer's input, validated.

A block is a run of whole lines (each ending in a newline; a last line without one gets one) of
about :data:`BLOCK_BYTES`. A block of plain decimal lines is checked by one regular expression
and converted by ``int`` in one pass; only a block that fails that fast check is looked at line
by line, to say which line is bad and why, with the rules the producer always had: surrounding
whitespace is ignored, a line must be an optional sign and decimal digits, inside signed 64 bits.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import threading
from collections.abc import Iterator
from typing import BinaryIO

from exactsum.protocol import INT64_MAX, INT64_MIN

BLOCK_BYTES = 256 * 1024

_PLAIN_BLOCK = re.compile(rb"(?:[+-]?[0-9]{1,19}\n)*")
_INTEGER_LINE = re.compile(r"^[+-]?[0-9]+$")


class InputError(ValueError):
    """Bad input: the message says which line, which value and why. ``good`` holds the values
    of the block's lines before the bad one (a stream still counts them)."""

    def __init__(self, message: str, good: list[int] | None = None) -> None:
        super().__init__(message)
        self.good = good or []


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


def split_sums(values: list[int]) -> tuple[int, int]:
    """The sum of the positive values and the sum of the others."""
    negative = sum(filter((0).__gt__, values))
    return sum(values) - negative, negative


def parse_block(block: bytes, first_line: int, name: str, offset: int) -> list[int]:
    """The values of a block of whole lines, the first of which is line ``first_line`` of the
    input and starts at byte ``offset``; :class:`InputError` at the first bad line."""
    if _PLAIN_BLOCK.fullmatch(block):
        values = list(map(int, block.split()))
        if not values or (min(values) >= INT64_MIN and max(values) <= INT64_MAX):
            return values
    values = []
    for number, raw in enumerate(block.split(b"\n")[:-1], start=first_line):
        try:
            values.append(parse_line(raw, number, name, offset))
        except InputError as exc:
            raise InputError(str(exc), values) from None
        offset += len(raw) + 1
    return values


def parse_line(raw: bytes, number: int, name: str, offset: int) -> int:
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: line {number}: not UTF-8 text ({exc.reason} at byte "
                         f"{offset + exc.start})") from None
    if not text:
        raise InputError(f"{name}: line {number}: empty line, expected an integer")
    if not _INTEGER_LINE.match(text):
        raise InputError(f"{name}: line {number}: {_shown(text)} is not an integer")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise InputError(f"{name}: line {number}: {_shown(text)} is outside signed 64 bits "
                         f"[{INT64_MIN}, {INT64_MAX}]")
    return value


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _overlong(data: bytes) -> int:
    """No newline yet: wait for more, unless the line is already far too long to be an integer
    (then it is handed on as a line of its own, to be refused, instead of filling memory)."""
    return len(data) if len(data) > 4 * BLOCK_BYTES else 0


def _whole_lines(carry: bytes, chunk: bytes) -> tuple[bytes, bytes]:
    """``(block, carry)``: the whole lines of ``carry + chunk`` (an empty block while no line is
    complete yet, unless the data is already overlong) and what is left for the next chunk."""
    data = carry + chunk if carry else chunk
    cut = data.rfind(b"\n") + 1 or _overlong(data)
    return data[:cut], data[cut:]


class BlockReader:
    """Blocks of whole lines of a file, its SHA-256 and its size in bytes as it goes."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.hasher = hashlib.sha256()
        self.offset = 0  # bytes handed out in blocks so far

    def blocks(self) -> Iterator[bytes]:
        carry = b""
        while True:
            chunk = self.stream.read(BLOCK_BYTES)
            if not chunk:
                break
            self.hasher.update(chunk)
            block, carry = _whole_lines(carry, chunk)
            if block:
                self.offset += len(block)
                yield block if block.endswith(b"\n") else block + b"\n"
        if carry:
            self.offset += len(carry)
            yield carry + b"\n"


class PipeReader:
    """Blocks of whole lines from a pipe, as soon as they arrive; ends at the end of input, or
    when ``stop`` is set (then an unfinished last line is not a line: ``dropped`` bytes)."""

    POLL_S = 0.1

    def __init__(self, fd: int, stop: threading.Event) -> None:
        self.fd, self.stop = fd, stop
        self.offset = 0
        self.stopped = False
        self.dropped = 0

    def blocks(self) -> Iterator[bytes]:
        carry = b""
        while True:
            if self.stop.is_set():
                self.stopped, self.dropped = True, len(carry)
                return
            ready, _, _ = select.select([self.fd], [], [], self.POLL_S)
            if not ready:
                continue
            chunk = os.read(self.fd, BLOCK_BYTES)
            if not chunk:
                break
            block, carry = _whole_lines(carry, chunk)
            if block:
                self.offset += len(block)
                yield block if block.endswith(b"\n") else block + b"\n"
        if carry:
            self.offset += len(carry)
            yield carry + b"\n"
