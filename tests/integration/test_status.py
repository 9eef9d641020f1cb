"""`status` tells the truth: during a run (checked against Redis around the look, and against
the rule that every batch is in exactly one place) and after it (checked against the keys and
the producer's audit); as tables, redrawn with --watch, and with a read-only Redis user."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from exactsum.keys import Keys
from exactsum_admin.acl import acl_file
from observe.snapshot import take
from tests.localredis import LocalRedis
from tests.observing import status_json
from tests.procs import (
    Services,
    assert_exact,
    committed,
    finish,
    numbers_file,
    random_sum,
    wait_until,
)

ITEMS, BATCH = 20_000, 20


def run_of(snap: dict[str, Any]) -> dict[str, Any]:
    assert len(snap["runs"]) == 1, snap["runs"]
    return dict(snap["runs"][0])


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_status_json_during_and_after_a_run(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path, expected = numbers_file(tmp_path, ITEMS)
    # Each thread claims up to --max-claim small batches at once (transport/native/worker.py).
    consumers = [services.consumer("--threads", "2", "--work-io-ms", "0.8", "--max-claim", "8")
                 for _ in range(2)]
    ids = {services.consumer_id(c) for c in consumers}
    producer = services.producer("--input", str(path), "--batch", str(BATCH))
    wait_until(lambda: committed(client, keys) >= ITEMS // 10, 30, "a tenth committed")
    run_id = cast(list[bytes], client.zrange(keys.runs, 0, 0))[0].decode()
    rk = keys.run(run_id)
    wait_until(lambda: client.hget(rk.meta, "state") == b"pushed", 20, "all pushed")

    depth_before, done_before = client.llen(keys.queue), committed(client, keys)
    snap = status_json(services)
    depth_after, done_after = client.llen(keys.queue), committed(client, keys)
    run = run_of(snap)
    assert run["run_id"] == run_id and run["state"] == "pushed" and not run["finished"]
    assert run["items"] == run["pushed"] == ITEMS and run["expected_sum"] == expected
    assert done_before <= run["committed"] <= done_after < ITEMS
    assert depth_after <= snap["queue_depth"] <= depth_before
    # One consistent look: the per-consumer counts add up to the committed count, and every
    # batch is in exactly one place: waiting, in flight, or resolved.
    assert sum(run["by_consumer"].values()) == run["committed"]
    assert (snap["queue_depth"] + snap["inflight_batches"]
            + run["resolved"] // BATCH) == ITEMS // BATCH
    assert run["audit"] is None
    # The same holds in every look, however the claims and commits fall around it.
    for _ in range(20):
        look = take(client, keys).as_dict()
        now = run_of(look)
        assert sum(now["by_consumer"].values()) == now["committed"]
        assert (look["queue_depth"] + look["inflight_batches"]
                + now["resolved"] // BATCH) == ITEMS // BATCH, look
    alive = {c["consumer_id"]: c for c in snap["consumers"] if c["alive"]}
    assert set(alive) == ids
    assert all(c["threads"] == 2 and c["inflight_batches"] <= 2 * 8 for c in alive.values())

    report = finish(producer)
    assert_exact(report, ITEMS, expected)
    snap = status_json(services)
    run = run_of(snap)
    assert run["state"] == "verified" and run["finished"]
    assert run["committed"] == report["committed"] == int(client.get(rk.committed) or 0)
    assert run["sum"] == report["sum"] == expected == int(client.get(rk.sum) or 0)
    assert run["by_consumer"] == report["by_consumer"] == {
        k.decode(): int(v) for k, v in cast(dict[bytes, bytes], client.hgetall(rk.by_consumer))
        .items()}
    assert run["audit"]["exact"] and run["audit"]["lost"] == run["audit"]["duplicated"] == 0
    assert snap["queue_depth"] == client.llen(keys.queue) == 0
    assert snap["inflight_batches"] == 0
    # Each consumer's own total (from its heartbeat) catches up with what Redis counted for it.
    def totals_match() -> bool:
        seen = {c["consumer_id"]: c["committed"] for c in status_json(services)["consumers"]
                if c["alive"]}
        return seen == report["by_consumer"]

    wait_until(totals_match, 10, "heartbeat totals", interval=0.5)


@pytest.mark.timeout(60)
def test_status_tables_and_watch(services: Services, tmp_path: Path) -> None:
    path, total = numbers_file(tmp_path, 2_000)
    consumer = services.consumer("--threads", "2")
    consumer_id = services.consumer_id(consumer)
    report = finish(services.producer("--input", str(path), "--batch", "50"))
    assert_exact(report, 2_000, total)
    shown = subprocess.run([sys.executable, "-m", "observe.status"], capture_output=True,
                           text=True, timeout=30, env=services.env())
    assert shown.returncode == 0, shown.stderr
    assert report["run_id"] in shown.stdout and consumer_id in shown.stdout
    line = next(x for x in shown.stdout.splitlines() if report["run_id"] in x)
    assert "verified" in line and "exact" in line and f"{total:,}" in line

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    watch = subprocess.Popen([sys.executable, "-m", "observe.status", "--watch", "--interval",
                              "0.2"], stdin=follower, stdout=follower, stderr=follower,
                             env=services.env(), start_new_session=True)
    os.close(follower)
    seen, deadline = b"", time.monotonic() + 20
    try:
        while seen.count(report["run_id"].encode()) < 3 and time.monotonic() < deadline:
            seen += os.read(leader, 65536)
        assert seen.count(report["run_id"].encode()) >= 3, seen[-2000:]  # redrawn, live
        watch.send_signal(signal.SIGINT)
        # Keep draining the terminal: a full pty would block the last redraw on exit.
        stop_by = time.monotonic() + 10
        while watch.poll() is None and time.monotonic() < stop_by:
            if select.select([leader], [], [], 0.1)[0]:
                try:
                    os.read(leader, 65536)
                except OSError:
                    break
        assert watch.wait(timeout=5) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
        os.close(leader)


@pytest.mark.timeout(60)
def test_status_with_the_read_only_observer_user(key_prefix: str, tmp_path: Path) -> None:
    passwords = {user: f"{user}-secret-password"
                 for user in ("producer", "consumer", "admin", "observer")}
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(acl_file(key_prefix, passwords))
    server = LocalRedis(extra_args=["--aclfile", str(aclfile)], username="admin",
                        password=passwords["admin"])
    server.start()
    services = Services(server.url, key_prefix, tmp_path)
    try:
        def creds(user: str) -> dict[str, str]:
            return {"REDIS_USERNAME": user, "REDIS_PASSWORD": passwords[user]}

        services.consumer("--threads", "2", **creds("consumer"))
        report = finish(services.producer("--count", "2000", "--batch", "100", "--seed", "3",
                                          **creds("producer")))
        expected_sum = random_sum(2000, 3)
        assert_exact(report, 2000, expected_sum)
        snap = status_json(services, **creds("observer"))
        assert run_of(snap)["sum"] == expected_sum and run_of(snap)["audit"]["exact"]
        observer = redis.Redis(host="127.0.0.1", port=server.port, username="observer",
                               password=passwords["observer"], socket_timeout=5)
        with pytest.raises(redis.exceptions.NoPermissionError):
            observer.set(f"{key_prefix}:runs", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            observer.get("outside-the-prefix")
        observer.close()
    finally:
        services.close()
        server.close()
