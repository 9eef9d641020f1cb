"""Redis Cluster resharding during a run: every partition's slot, then the slots of the keys the
partitions share, moved to another primary by hand (SETSLOT IMPORTING/MIGRATING, MIGRATE key by
key, SETSLOT NODE) while the producer pushes and three consumers commit, with every script
WAITed for by a replica. The run stays exact."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from exactsum.cluster import choose_tags, register_scripts
from exactsum.counters import Event
from exactsum.keys import Keys
from exactsum.scripts import Moved
from tests.cluster_harness import (
    QUICK_LIVENESS,
    ClusterServices,
    cluster_client,
    committed_on_cluster,
    run_tags,
)
from tests.localcluster import LocalCluster
from tests.procs import assert_exact, finish, numbers_file, wait_until

ITEMS = 600_000
ACKED = ("--min-replicas", "1", "--replica-timeout", "2")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_partition_resharded_to_another_primary_mid_run_keeps_the_sum_exact(
    cluster_services: ClusterServices, fresh_cluster: LocalCluster, fresh_client: redis.Redis,
    keys: Keys, tmp_path: Path
) -> None:
    services, cluster, client = cluster_services, fresh_cluster, fresh_client
    path, total = numbers_file(tmp_path, ITEMS, seed=12)
    consumers = [services.consumer("--threads", "4", "--work-io-ms", "0.02", *QUICK_LIVENESS,
                                   *ACKED) for _ in range(3)]
    # Small batches and a bounded queue: the producer is still pushing, and every partition
    # busy, while its slot moves.
    producer = services.producer("--input", str(path), "--batch", "100", "--max-queue",
                                 "20000", "--run-id", "reshard", "--timeout", "500", *ACKED)
    wait_until(lambda: committed_on_cluster(client, keys) >= ITEMS // 10, 200,
               "a tenth committed")
    tags = run_tags(client, keys, "reshard")
    assert len(tags) == 6
    primaries = cluster.primary_nodes()
    moves: list[tuple[str, int, int, int, float]] = []
    for tag in tags:
        slot = key_slot(tag.encode())
        source = cluster.owner_of_slot(slot)
        target = primaries[(primaries.index(source) + 1) % len(primaries)]
        started = time.monotonic()
        # One key at a time with a pause: the slot's keys stay split between the two nodes
        # for a second or more, so scripts meet ASK and TRYAGAIN, not just MOVED afterwards.
        moved = cluster.migrate_slot(slot, target, keys_per_step=1, pause_s=0.1)
        moves.append((tag, source.port, target.port, moved, time.monotonic() - started))
        assert cluster.owner_of_slot(slot) is target
    # Then the slots of the keys every partition shares (the run's own meta, which the
    # producer WATCHes; the registries of runs, partitions and consumers), one by one.
    home = [keys.run("reshard").meta, keys.runs, keys.partitions, keys.consumers]
    for slot in dict.fromkeys(key_slot(name.encode()) for name in home):
        source = cluster.owner_of_slot(slot)
        target = primaries[(primaries.index(source) + 1) % len(primaries)]
        started = time.monotonic()
        moved = cluster.migrate_slot(slot, target, keys_per_step=1, pause_s=0.1)
        moves.append((f"slot {slot}", source.port, target.port, moved,
                      time.monotonic() - started))
    after_moves = committed_on_cluster(client, keys)
    print("moves (tag, from, to, keys, seconds): " + "; ".join(
        f"{tag} {a}->{b} {n} keys {s:.1f} s" for tag, a, b, n, s in moves))
    assert after_moves < ITEMS, "the run ended before the last slot had moved"
    assert all(n > 0 for _, _, _, n, _ in moves[:6]), "a partition's slot had no keys to move"
    report = finish(producer, timeout=500)
    assert_exact(report, ITEMS, total)
    logs = "".join(proc.stderr for proc in [producer, *consumers])
    assert "CROSSSLOT" not in logs  # an error no retry cures: a script's keys in two slots
    # MOVED and ASK are followed silently; TRYAGAIN (a script's keys split between the two
    # nodes) is retried with backoff: the services met the split slots.
    procs = [producer, *consumers]
    tryagain = sum(proc.counter(Event.REDIS_RETRY_TRYAGAIN) for proc in procs)
    print(f"retries by the services: {sum(p.counter(Event.REDIS_RETRY) for p in procs)}, "
          f"{tryagain} of them TRYAGAIN")
    assert tryagain > 0, logs[-3000:]
    for proc in consumers:
        assert proc.popen.poll() is None, f"{proc.name} exited: {proc.stderr[-2000:]}"


@pytest.fixture
def small_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(2, 0) as local:
        yield local


@pytest.mark.timeout(120)
def test_a_script_follows_ask_and_moved_and_waits_out_a_split_slot(
    small_cluster: LocalCluster, keys: Keys
) -> None:
    """A slot half migrated by hand: a script whose keys have all moved follows ASK to the
    importing node (loading itself there), one whose keys are split gets TRYAGAIN (for
    `retrying`), and after SETSLOT NODE a script follows MOVED with its stale slot map."""
    client = cluster_client(small_cluster.url)
    scripts = register_scripts(client)
    part = keys.partition(choose_tags(client, 1)[0])
    slot = key_slot(part.queue.encode())
    source = small_cluster.owner_of_slot(slot)
    target = next(n for n in small_cluster.primary_nodes() if n is not source)
    client.rpush(part.dead, b"a", b"b")
    client.rpush(part.dropped, b"x")
    client.rpush(part.queue, b"q")
    src, dst = source.client(), target.client()
    src_id, dst_id = small_cluster.node_id(source), small_cluster.node_id(target)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", part.dead,
                        part.dropped)
    dst.script_flush()  # the importing node must load the script itself
    # Both keys on the importing node: ASK, followed with ASKING.
    assert scripts.drop_dead(keys=[part.dead, part.dropped], args=[b"a"]) == Moved.MOVED
    # The queue still on the source, the dead list on the target: the keys are split.
    with pytest.raises(redis.exceptions.TryAgainError):
        scripts.requeue_dead(keys=[part.dead, part.queue, part.queue, part.queue, part.queue],
                             args=[b"b", b"b", "", 0])
    src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", part.queue)
    for node in (target, source):
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    # The client's map still says the source: MOVED, patched and followed, no error.
    assert scripts.requeue_dead(keys=[part.dead, part.queue, part.queue, part.queue,
                                      part.queue], args=[b"b", b"b", "", 0]) == Moved.MOVED
    assert client.lrange(part.queue, 0, -1) == [b"b", b"q"]
    assert client.lrange(part.dropped, 0, -1) == [b"x", b"a"]
    assert scripts.claim(keys=[part.queue, part.inflight("c", 0)], args=[5]) == [b"q", b"b"]
    assert small_cluster.owner_of_slot(slot) is target
    client.close()
