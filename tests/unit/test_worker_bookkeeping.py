"""The native worker's bookkeeping of what it holds: ``pending`` (claimed, waiting its turn),
``taken`` (being handled) and the count the scripts return of what is left in its in-flight
list. A list holding more than the worker knows of means a claim whose reply was lost: the
worker must re-read its list. No Redis: a client that never connects."""

from __future__ import annotations

import threading

import pytest

from exactsum.connection import make_client
from exactsum.keys import Keys
from exactsum.scripts import Scripts
from exactsum.transport.native.worker import Worker


@pytest.fixture
def worker() -> Worker:
    # Connects only when a command is sent, and never retries by itself.
    client = make_client("redis://127.0.0.1:1/0", socket_timeout=1.0)
    w = Worker(client, Keys("t"), Scripts.register(client), "c1", 2, block_timeout=1.0,
               stop_claiming=threading.Event(), halt=threading.Event())
    w.resync = False
    return w


def test_the_in_flight_list_is_the_workers_own(worker: Worker) -> None:
    assert worker.inflight == Keys("t").inflight("c1", 2)
    assert worker.name == "worker-2"


def test_a_list_as_long_as_what_the_worker_holds_needs_no_resync(worker: Worker) -> None:
    worker.pending.extend([b"a", b"b"])
    worker.taken = 1
    worker._note_left(3)
    assert not worker.resync and list(worker.pending) == [b"a", b"b"]
    worker._note_left(0)  # shorter: someone reclaimed from us; the commit fences that
    assert not worker.resync


def test_more_in_the_list_than_the_worker_knows_of_means_a_lost_claim(worker: Worker) -> None:
    worker.pending.extend([b"a", b"b"])
    worker.taken = 1
    worker._note_left(4)
    # Re-read the list rather than trust ``pending``: it is the list that holds the truth.
    assert worker.resync and not worker.pending


def test_an_error_marks_the_list_for_rereading(worker: Worker) -> None:
    worker._mark_resync()
    assert worker.resync


def test_handle_many_counts_what_it_took_and_clears_it(worker: Worker) -> None:
    # Elements that are not ours are dead-lettered; with no Redis to answer, the call fails
    # after counting them as taken, and ``taken`` is cleared on the way out either way.
    worker.halt.set()  # give up on the first failed attempt instead of retrying
    with pytest.raises(Exception):  # noqa: B017 - RetryAborted, or the connection's error
        worker.handle_many([b"not ours", b"nor this"])
    assert worker.taken == 0
