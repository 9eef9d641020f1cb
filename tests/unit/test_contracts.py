"""What the services agree on without Redis: the transports by name, the element header, the
RQ pool workers' names and job ids, and the scripts' statuses as the Lua headers define them."""

from __future__ import annotations

import re
from enum import IntEnum
from importlib import resources

import pytest

from exactsum import transport
from exactsum.keys import Keys, PoolWorkerName, RqKeys, job_id, parse_job_id
from exactsum.options import Options
from exactsum.protocol import HEADER_MAX, Header, element_items, encode, read_header
from exactsum.scripts import Commit, DeadLetter, ReclaimJob, Retry
from exactsum.transport.rq.settings import RqSettings


def test_transports_are_found_by_name() -> None:
    assert transport.names() == ["native", "rq"]
    assert transport.get("native").name == "native"
    assert transport.get("rq").name == "rq"
    with pytest.raises(ValueError, match="no transport 'kafka'; there are native, rq"):
        transport.get("kafka")


def test_each_transport_names_its_queue() -> None:
    keys = Keys("p")
    assert transport.get("native").queue_key(keys, Options()) == "p:queue"
    assert transport.get("native").queue_of_run(keys, {}) == "p:queue"
    queue = transport.get("rq").queue_key(keys, RqSettings("jobs"))
    assert queue == RqKeys("jobs").queue == "rq:queue:jobs"
    assert transport.get("rq").queue_of_run(keys, {b"rq_queue": b"q2"}) == "rq:queue:q2"
    assert transport.get("rq").queue_of_run(keys, {}) == "rq:queue:exactsum"
    with pytest.raises(TypeError, match="given Options, not RqSettings"):
        transport.get("rq").queue_key(keys, Options())
    assert transport.get("rq").prefix_problem("a.b") is not None
    assert transport.get("rq").prefix_problem("a-b_1") is None
    assert transport.get("native").prefix_problem("a.b") is None


def test_the_header_is_read_from_the_first_bytes_alone() -> None:
    element = encode("r" * 64, 10**19, list(range(1000)), pushed_us=10**19)
    assert len(element) > HEADER_MAX
    assert read_header(element[:HEADER_MAX]) == Header("r" * 64, 10**19, 1000)
    assert element_items(element) == 1000


@pytest.mark.parametrize("element", [b"", b"pc2|r|0|1|1|5", b"pc1|r:x|0|1|1|5",
                                     b"pc1|r|x|1|1|5", b"pc1|r|0|1|5", b"hello world"])
def test_anything_else_has_no_header(element: bytes) -> None:
    assert read_header(element) is None and element_items(element) == 0


def test_pool_worker_names_round_trip() -> None:
    name = PoolWorkerName("host-12-ab34cd", 3, 7)
    assert str(name) == "host-12-ab34cd.w3.7"
    assert PoolWorkerName.parse(str(name)) == name
    assert PoolWorkerName.parse("a-plain-rq-worker") is None
    assert PoolWorkerName.parse("bad.name.w1.2") is None


def test_job_ids_round_trip_under_their_prefix_only() -> None:
    assert parse_job_id("pc", job_id("pc", "run-1", 42)) == ("run-1", 42)
    assert parse_job_id("other", job_id("pc", "run-1", 42)) is None
    assert parse_job_id("pc", "pc-run") is None


def _returned(script: str) -> str:
    return resources.files("exactsum").joinpath("lua", f"{script}.lua").read_text()


@pytest.mark.parametrize(("script", "statuses"), [
    ("commit", Commit), ("commit_job", Commit), ("retry", Retry), ("reclaim_job", ReclaimJob),
    ("dead_letter", DeadLetter), ("dead_letter_job", DeadLetter),
])
def test_every_status_a_script_returns_has_a_name(script: str,
                                                  statuses: type[IntEnum]) -> None:
    returned = {int(n) for n in re.findall(r"return \{?(-?\d+)[,}\n ]", _returned(script))}
    returned |= {int(n) for n in re.findall(r"status = (-?\d+)", _returned(script))}
    assert returned, script
    assert returned <= {int(s) for s in statuses}, (script, returned)
