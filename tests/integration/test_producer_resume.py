"""The producer is no single point of failure: killed, it is resumed; doubled, it is fenced.

Every run sums a file whose sum the test computed itself. "Nothing pushed twice" is checked in
Redis: a batch pushed twice would be a second element of the same batch, which consumers claim
and whose commit is refused as stale (or which would still wait in the queue at the end), so a
run with no stale commit, an empty queue, every batch done once and committed = the file's
count pushed each batch once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from exactsum.counters import Event
from exactsum.keys import Keys
from tests.procs import Proc, Services, assert_exact, finish, numbers_file, random_sum, wait_until

ITEMS = 1_000_000
BATCH = 1000
RUN = "resume-me"


def pushed_batches(client: redis.Redis, keys: Keys, run_id: str = RUN) -> int:
    return int(client.bitcount(keys.run(run_id).pushed))


def meta(client: redis.Redis, keys: Keys, run_id: str = RUN) -> dict[str, str]:
    raw = client.hgetall(keys.run(run_id).meta)
    return {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]


def admin(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exactsum_admin", *args], capture_output=True,
                          text=True, timeout=60, env=services.env())


def assert_pushed_once(client: redis.Redis, keys: Keys, report: dict[str, object],
                       batches: int, run_id: str = RUN) -> None:
    rk = keys.run(run_id)
    assert int(client.bitcount(rk.done)) == batches
    assert int(client.bitcount(rk.pushed)) == batches
    assert int(client.get(rk.stale) or 0) == 0, "an element was pushed twice (a stale commit)"
    assert client.llen(keys.queue) == 0
    assert report["stale_commits"] == 0 and report["duplicated"] == 0


def start(services: Services, path: Path, *extra: str, name: str = "producer") -> Proc:
    return services.producer("--input", str(path), "--batch", str(BATCH), "--run-id", RUN,
                             "--max-queue", "20000", *extra, name=name)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_the_producer_then_resume_exactly_and_refuse_another_file(
        services: Services, client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    path, total = numbers_file(tmp_path, ITEMS)
    for _ in range(3):
        services.consumer("--threads", "2")
    first = start(services, path)
    wait_until(lambda: pushed_batches(client, keys) >= 200, 120, "200 batches pushed")
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    at_kill = pushed_batches(client, keys)
    assert 200 <= at_kill < ITEMS // BATCH, "the kill must land mid-push"
    assert meta(client, keys)["state"] == "pushing"

    # The audit calls the run incomplete and says how to resume it (once the producer's sign
    # of life is old enough to call it gone: a few seconds here).
    audited = admin(services, "audit", RUN)
    assert audited.returncode == 4, audited.stdout + audited.stderr
    wait_until(lambda: "is gone (last seen" in admin(services, "audit", RUN).stdout, 40,
               "the audit to call the producer gone", interval=1.0)
    audited = admin(services, "audit", RUN)
    assert f"run {RUN} is INCOMPLETE (pushing)" in audited.stdout
    assert f"batches pushed    : {at_kill} of {ITEMS // BATCH}" in audited.stdout
    assert f"--batch {BATCH} and --run-id {RUN}" in audited.stdout
    status = json.loads(admin(services, "status", "--run", RUN, "--json").stdout)
    assert status["complete"] is False and status["lost"] == 0
    assert status["not_pushed"] + status["pending"] + status["committed"] == ITEMS

    # Another file under the same run id: refused, naming what differs; nothing pushed.
    changed = tmp_path / "changed.txt"
    changed.write_text(path.read_text().replace("\n", "\n0\n", 1))
    epoch = meta(client, keys)["epoch"]
    refused = start(services, changed, name="changed")
    assert refused.wait(timeout=120) == 2, refused.stderr[-2000:]
    assert f"run '{RUN}' exists and cannot be resumed" in refused.stderr
    assert "sha256 is" in refused.stderr and f"lines is {ITEMS} there, {ITEMS + 1} here" in (
        refused.stderr)
    assert pushed_batches(client, keys) == at_kill and meta(client, keys)["epoch"] == epoch
    # So is the same file in batches of another size.
    rebatched = services.producer("--input", str(path), "--batch", "500", "--run-id", RUN,
                                  name="rebatched")
    assert rebatched.wait(timeout=120) == 2
    assert "batch_size is 1000 there, 500 here" in rebatched.stderr
    assert pushed_batches(client, keys) == at_kill

    # The same command again: resumed, exact over the whole run, nothing pushed twice.
    report = finish(start(services, path, name="resumed"), timeout=200)
    assert_exact(report, ITEMS, total)
    assert report["resumed"] is True and report["epoch"] == 2
    assert at_kill * BATCH <= report["pushed_before"] < ITEMS
    assert_pushed_once(client, keys, report, ITEMS // BATCH)
    print(f"\nkilled at {at_kill} batches pushed; resumed: {report['pushed_before']} items "
          f"pushed before, {report['committed']} committed, sum {report['sum']} = {total}")
    assert meta(client, keys)["state"] == "verified"
    assert admin(services, "audit", RUN).returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_producers_of_one_run_the_older_is_fenced(
        services: Services, client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    items = 300_000
    path, total = numbers_file(tmp_path, items)
    for _ in range(2):  # about 80 batches a second: the older pushes for seconds
        services.consumer("--threads", "2", "--work-io-ms", "0.05")
    older = start(services, path, name="older")
    wait_until(lambda: pushed_batches(client, keys) >= 30, 120, "30 batches pushed")
    newer = start(services, path, name="newer")
    assert pushed_batches(client, keys) < items // BATCH  # the older one is still pushing
    assert older.wait(timeout=120) == 4, older.stderr[-3000:]
    assert older.counter(Event.PRODUCER_FENCED) >= 1, older.counters()
    report = finish(newer, timeout=200)
    print(f"\nolder producer fenced: {older.stderr.strip().splitlines()[-1]}")
    assert_exact(report, items, total)
    assert report["epoch"] == 2
    assert_pushed_once(client, keys, report, items // BATCH)


@pytest.mark.timeout(120)
def test_a_random_run_resumes_only_with_its_seed(
        services: Services, client: redis.Redis, keys: Keys) -> None:
    services.consumer("--threads", "2")
    args = ["--count", "20000", "--batch", "100", "--run-id", "rnd"]
    report = finish(services.producer(*args, "--seed", "5"))
    assert_exact(report, 20000, random_sum(20000, 5))
    assert not report["resumed"]
    again = finish(services.producer(*args, "--seed", "5", name="again"))
    # Everything was pushed already: nothing is pushed, the run is judged again, still exact.
    assert again["resumed"] and again["pushed_before"] == 20000
    assert_exact(again, 20000, random_sum(20000, 5))
    other = services.producer(*args, "--seed", "6", name="other")
    assert other.wait(timeout=60) == 2
    assert "seed is 5 there, 6 here" in other.stderr
    unseeded = services.producer("--count", "100", "--run-id", "noseed", name="unseeded")
    assert unseeded.wait(timeout=60) == 0
    repeat = services.producer("--count", "100", "--run-id", "noseed", name="repeat")
    assert repeat.wait(timeout=60) == 2
    assert "random without --seed" in repeat.stderr


SLOW_WRITER = """
import random, sys, time
rng = random.Random(int(sys.argv[2]))
with open(sys.argv[1], "w") as record:
    while True:
        value = rng.randint(-1000, 1000000)
        record.write(f"{value}\\n")
        record.flush()
        try:
            sys.stdout.write(f"{value}\\n")
            sys.stdout.flush()
        except BrokenPipeError:
            break
        time.sleep(0.003)
"""


@pytest.mark.timeout(120)
def test_a_slow_pipe_is_summed_live_and_exactly_up_to_sigterm(
        services: Services, tmp_path: Path) -> None:
    """A generator writes a line every 3 ms; the producer pushes batches as they fill, shows the
    running sum, and on SIGTERM pushes what it read, waits for it and reports it exactly."""
    record = tmp_path / "written.txt"
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(record), "11"],
                              stdout=subprocess.PIPE)
    try:
        for _ in range(2):
            services.consumer("--threads", "2")
        producer = services.producer("--input", "-", "--batch", "10", "--progress-interval",
                                     "0.3", stdin=writer.stdout)
        assert writer.stdout is not None
        writer.stdout.close()  # the producer holds the pipe now
        wait_until(lambda: "sum so far" in producer.stderr and len(
            [line for line in record.read_text().splitlines()]) > 500, 60, "500 lines written")
        live = [line for line in producer.stderr.splitlines() if "sum so far" in line]
        producer.signal(signal.SIGTERM)
        assert producer.wait(timeout=60) == 0, producer.stderr[-3000:]
    finally:
        writer.kill()
        writer.wait(timeout=10)
    report = producer.report()
    read = report["lines_read"]
    written = [int(line) for line in record.read_text().splitlines()]
    assert 500 <= read <= len(written)
    assert report["ended_by"] == "signal"
    assert_exact(report, read, sum(written[:read]))  # the generator's record is the oracle
    # Progress was live: committed counts went up while the stream was still being read.
    committed = [int(line.split("committed ")[1].split(" ")[0]) for line in live]
    assert committed and max(committed) > 0, live


@pytest.mark.timeout(60)
def test_a_second_signal_interrupts_a_stream_that_waits_for_consumers(
        services: Services, client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """No consumer: the first SIGTERM ends the input and the producer waits for the lines it
    read to be counted; the second interrupts that wait (exit 1): the run is unverified, its
    lines pending on the queue."""
    record = tmp_path / "written.txt"
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(record), "12"],
                              stdout=subprocess.PIPE)
    try:
        producer = services.producer("--input", "-", "--batch", "10", "--run-id", "pipe",
                                     stdin=writer.stdout)
        assert writer.stdout is not None
        writer.stdout.close()
        wait_until(lambda: pushed_batches(client, keys, "pipe") >= 3, 30, "3 batches pushed")
        producer.signal(signal.SIGTERM)
        # Every line read and pushed: the producer now waits for the consumers.
        wait_until(lambda: client.hget(keys.run("pipe").meta, "state") == b"pushed", 30,
                   "the wait")
        producer.signal(signal.SIGTERM)
        assert producer.wait(timeout=30) == 1, producer.stderr[-2000:]
    finally:
        writer.kill()
        writer.wait(timeout=10)
    report = producer.report()
    assert report["ended_by"] == "signal" and report["committed"] == 0
    assert report["pending"] == report["lines_read"] == report["produced"] >= 30
    assert meta(client, keys, "pipe")["state"] == "unverified"
