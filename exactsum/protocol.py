"""The wire format of one queue element: a batch of numbers of one run.

An element is ``pc1|<run id>|<batch seq>|<count>|<pushed at>|<v1>,<v2>,...`` in ASCII, where
``pushed at`` is the producer's wall clock in microseconds when it made the element (for
push-to-commit latency; it plays no part in counting). The run id and the batch sequence number
are the batch's identity; item ``i`` of batch ``s`` is item
``s * batch_size + i`` of the run, so every item has an identity without carrying one.
The count is repeated in the header so that a truncated or altered element is caught instead of
being counted short. Anything that does not parse is not ours: it is dead-lettered, never counted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

MAGIC = b"pc1"
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RUN_ID_BYTES_RE = re.compile(rb"^[A-Za-z0-9_-]{1,64}$")


# The longest header: magic, a run id of 64, a sequence number, a count and a time of up to 20
# digits each, and the five '|' that end the fields. Reading this many bytes of an element is
# enough to know which batch it is and how many items it holds.
HEADER_MAX = len(MAGIC) + 64 + 3 * 20 + 5


class ForeignElement(ValueError):
    """An element in the queue that was not written by a producer of this protocol."""


@dataclass(frozen=True, slots=True)
class Batch:
    run_id: str
    seq: int
    count: int
    total: int  # the exact sum of the batch's values (a Python int, may exceed 64 bits)
    pushed_us: int
    values: list[int]


@dataclass(frozen=True, slots=True)
class Header:
    """Which batch an element is, and how many items it holds, read without its values."""

    run_id: str
    seq: int
    count: int


def read_header(element: bytes) -> Header | None:
    """The header of an element, or of its first :data:`HEADER_MAX` bytes (what a snapshot that
    leaves the values in Redis returns); None if it is not one of ours. The values are not
    checked: :func:`decode` does that before anything is counted."""
    parts = element[:HEADER_MAX].split(b"|", 5)
    if len(parts) != 6 or parts[0] != MAGIC or not _RUN_ID_BYTES_RE.match(parts[1]):
        return None
    if not (parts[2].isdigit() and parts[3].isdigit() and parts[4].isdigit()):
        return None
    return Header(parts[1].decode(), int(parts[2]), int(parts[3]))


def element_items(element: bytes) -> int:
    """Items in an element, from its header alone (0 if it is not ours)."""
    header = read_header(element)
    return header.count if header else 0


def encode(run_id: str, seq: int, values: Sequence[int], pushed_us: int | None = None) -> bytes:
    return encode_text(run_id, seq, len(values), ",".join(map(str, values)), pushed_us)


def encode_text(run_id: str, seq: int, count: int, body: str,
                pushed_us: int | None = None) -> bytes:
    """Like :func:`encode` for a body already joined by the caller (the producer's fast path)."""
    if pushed_us is None:
        pushed_us = time.time_ns() // 1000
    return b"%s|%s|%d|%d|%d|%s" % (MAGIC, run_id.encode(), seq, count, pushed_us, body.encode())


def decode(element: bytes) -> Batch:
    """Parse one element; raise :class:`ForeignElement` with the reason if it is not ours."""
    parts = element.split(b"|")
    if len(parts) != 6 or parts[0] != MAGIC:
        raise ForeignElement("not a pc1 element (expected 'pc1|run|seq|count|time|values')")
    _, run_raw, seq_raw, count_raw, time_raw, body = parts
    if not _RUN_ID_BYTES_RE.match(run_raw):
        raise ForeignElement("bad run id")
    if not (seq_raw.isdigit() and count_raw.isdigit() and time_raw.isdigit()):
        raise ForeignElement("batch sequence number, count and time must be decimal digits")
    seq, count = int(seq_raw), int(count_raw)
    fields = body.split(b",")
    if count < 1 or len(fields) != count:
        raise ForeignElement(f"header says {count} values, element holds {len(fields)}")
    try:
        values = list(map(int, fields))
    except ValueError:
        raise ForeignElement("a value is not an integer") from None
    if min(values) < INT64_MIN or max(values) > INT64_MAX:
        raise ForeignElement("a value is outside signed 64 bits")
    return Batch(run_raw.decode(), seq, count, sum(values), int(time_raw), values)
