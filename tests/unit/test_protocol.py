"""The wire format: what round-trips, and that anything else is refused as foreign, never
mis-counted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exactsum.protocol import INT64_MAX, INT64_MIN, ForeignElement, decode, encode

int64 = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)


@given(st.lists(int64, min_size=1, max_size=50), st.integers(0, 10**9))
def test_round_trip(values: list[int], seq: int) -> None:
    batch = decode(encode("run-1", seq, values, pushed_us=123))
    assert (batch.run_id, batch.seq, batch.count, batch.total, batch.pushed_us) == (
        "run-1", seq, len(values), sum(values), 123)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_foreign_or_exact(element: bytes) -> None:
    try:
        batch = decode(element)
    except ForeignElement:
        return
    # Whatever parses is a well-formed element: its values re-encode to the same count and sum.
    body = element.split(b"|")[5]
    values = [int(v) for v in body.split(b",")]
    assert batch.count == len(values) and batch.total == sum(values)


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        (b"", "not a pc1 element"),
        (b"pc2|r|0|1|1|5", "not a pc1 element"),
        (b"pc1|r:x|0|1|1|5", "bad run id"),
        (b"pc1|r|-1|1|1|5", "decimal digits"),
        (b"pc1|r|0|2|1|5", "header says 2 values, element holds 1"),
        (b"pc1|r|0|0|1|", "header says 0 values"),
        (b"pc1|r|0|1|1|five", "not an integer"),
        (b"pc1|r|0|1|1|9223372036854775808", "outside signed 64 bits"),
        (b"pc1|r|0|1|1|5|6", "not a pc1 element"),
    ],
)
def test_foreign_elements_say_why(element: bytes, reason: str) -> None:
    with pytest.raises(ForeignElement, match=reason):
        decode(element)
