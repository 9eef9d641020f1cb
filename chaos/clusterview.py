"""The chaos run over a Redis Cluster (``python -m chaos --redis cluster``): what differs.

(:mod:`chaos.cluster` is the group of service *processes*; this module is about Redis Cluster.)

- **Redis**: a :class:`tests.localcluster.LocalCluster` of three primaries with one replica
  each, in the run's directory. The services get ``REDIS_CLUSTER=1``, ``MIN_REPLICAS`` (the
  acknowledgement rule that makes a failover exact: with one replica per primary, the replica
  Cluster promotes has every acknowledged write, docs/cluster.md) and the producer
  ``PRODUCER_PARTITIONS``. Each service is seeded from a node that is up when it starts.
- **Snapshot**: one ``SNAPSHOT_LUA`` per partition, on that partition's primary (its keys are
  in one slot, so the script stays single-slot and atomic), followed on the same connection by
  a small write and ``WAIT``: a partition's read counts only once its replica has what it saw,
  since a failover may undo writes no replica had. The run's state is the partitions' sum; the
  checker judges each partition on its own. A partition whose primary is failing over is left
  out of that sample (``Snapshot.unread``).
- **Reads of the injector** add the partitions up; the failover kind compares the acknowledged
  committed count partition by partition.
- **Fault kind** ``failover``: kill -9 of one primary (picked by the seed's schedule); the
  cluster promotes its replica; after the hold the old primary starts again on its data and
  rejoins as the new primary's replica. The injector's ``_failover`` is the one that
  ``--redis sentinel`` uses; only the group below differs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, cast

import redis
from redis.crc import key_slot

from chaos.checker import (
    SNAPSHOT_LUA,
    RunState,
    Snapshot,
    SnapshotFn,
    parse_snapshot,
    snapshot_args,
)
from chaos.cluster import Cluster
from chaos.episodes import Episode
from chaos.faults import Injector
from exactsum.cluster import as_cluster
from exactsum.connection import RedisTarget
from exactsum.keys import Keys
from exactsum.replication import Replication
from exactsum.runs import RunPlan
from tests.localcluster import LocalCluster
from tests.localredis import LocalRedis

log = logging.getLogger("chaos.clusterview")

# Why the other kinds are not run on a cluster (reported as disabled, as chaos does).
DISABLED = {
    "redis": "--redis cluster (a primary's kill -9 and failover instead)",
    "partition": ("--redis cluster (the nodes announce loopback addresses, out of a "
                  "namespaced consumer's reach)"),
}
# The field of a partition's ``acks`` hash that the harness' own barrier writes.
ACK_FIELD = "chaos_checked_ms"


def start_redis_cluster(workdir: Path) -> LocalCluster:
    """Three primaries, a replica each; node timeout 2 s, so a failover fits the window."""
    group = LocalCluster(3, 1, node_timeout_ms=2000, work_dir=workdir / "cluster")
    group.start()
    return group


class ClusterProcesses(Cluster):
    """The services' processes, pointed at a Redis Cluster."""

    def __init__(self, *args: Any, redis_cluster: LocalCluster, partitions: int,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redis_cluster = redis_cluster
        self.partitions = partitions

    def env(self, url: str) -> dict[str, str]:
        env = super().env(self.redis_cluster.live_url())
        env.update(REDIS_CLUSTER="1", MIN_REPLICAS=str(self.min_replicas),
                   PRODUCER_PARTITIONS=str(self.partitions))
        return env

    @property
    def target(self) -> RedisTarget:
        return RedisTarget(self.redis_cluster.live_url(), cluster="1")


def node_client(client: redis.Redis, key: str) -> redis.Redis:
    """A client of the primary that serves ``key``'s slot, by the client's slot map."""
    cluster = as_cluster(client)
    node = cluster.nodes_manager.get_node_from_slot(key_slot(key.encode()))
    return cluster.get_redis_connection(node)


def refresh(client: redis.Redis) -> None:
    try:
        as_cluster(client).nodes_manager.initialize()
    except Exception as exc:  # the next read finds out again; say why here
        log.debug("slot map not refreshed yet: %s", exc)


def run_layout(client: redis.Redis, keys: Keys, run_id: str) -> tuple[RunPlan | None,
                                                                      list[str]]:
    """The run's plan and partition tags, from its own meta (absent before the producer ran)."""
    items, batch, tags = cast(list[bytes | None], client.hmget(
        keys.run(run_id).meta, ["items", "batch_size", "partitions"]))
    if not (items and batch and tags):
        return None, []
    return RunPlan(run_id, int(items), int(batch)), tags.decode().split(",")


def partition_snapshot(client: redis.Redis, keys: Keys, run_ids: list[str],
                       replication: Replication) -> Snapshot:
    """:data:`SNAPSHOT_LUA` on the partition's primary, then (with ``replication``) a write
    of our own and WAIT on the same connection: the replicas have all that the read saw."""
    node = node_client(client, keys.queue)
    pipe = node.pipeline(transaction=False)
    pipe.eval(SNAPSHOT_LUA, 0, *snapshot_args(keys, run_ids))
    if replication.enabled:
        for run_id in run_ids:
            pipe.hset(keys.run(run_id).acks, ACK_FIELD, int(time.time() * 1000))
    return parse_snapshot(replication.execute(pipe)[0], keys)


def cluster_snapshot(min_replicas: int) -> SnapshotFn:
    replication = Replication(min_replicas)
    layouts: dict[str, tuple[RunPlan, list[str]]] = {}  # fixed once the run exists

    def take(client: redis.Redis, keys: Keys, run_ids: list[str]) -> Snapshot:
        for run_id in run_ids:
            if run_id not in layouts:
                plan, tags = run_layout(client, keys, run_id)
                if plan is not None:
                    layouts[run_id] = (plan, tags)
        tags = sorted({t for r in run_ids if r in layouts for t in layouts[r][1]})
        whole = {r: RunState(r, layouts[r][0] if r in layouts else None, set(), set(), 0, 0, 0)
                 for r in run_ids}
        out = Snapshot(time.monotonic(), whole, 0, {}, {}, 0)
        unread = []
        for tag in tags:
            try:
                part = partition_snapshot(client, keys.partition(tag), run_ids, replication)
            except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
                log.debug("partition %s not read: %s", tag, exc)
                refresh(client)
                unread.append(tag)
                continue
            add(out, part, tag, layouts)
        out.unread = tuple(unread)
        if tags and len(unread) == len(tags):
            raise redis.ConnectionError(f"no partition could be read: {unread}")
        return out

    return take


def add(out: Snapshot, part: Snapshot, tag: str,
        layouts: dict[str, tuple[RunPlan, list[str]]]) -> None:
    """Add one partition's snapshot to the run's (``out``), keeping it by its tag."""
    out.foreign += part.foreign
    out.reclaimed += part.reclaimed
    for name, table in (("orphans", part.orphans), ("holders", part.holders)):
        into = getattr(out, name)
        for owner, n in table.items():
            into[owner] = into.get(owner, 0) + n
    for run_id, state in part.runs.items():
        if run_id not in layouts or tag not in layouts[run_id][1]:
            continue
        state.plan = layouts[run_id][0]  # a partition's meta copy has no plan: the run's has
        whole = out.runs[run_id]
        whole.parts[tag] = state
        whole.pushed |= state.pushed
        whole.done |= state.done
        whole.committed += state.committed
        whole.dead_items += state.dead_items
        whole.sum += state.sum
        whole.queue += state.queue
        whole.inflight += state.inflight
        whole.queue_items += state.queue_items
        whole.inflight_items += state.inflight_items


class ClusterFailover:
    """The failover kind's group (chaos.faults.FailoverGroup) over a LocalCluster."""

    def __init__(self, group: LocalCluster) -> None:
        self.group = group
        self.before: set[int] = set()

    def kill_primary(self, pick: float) -> LocalRedis:
        primaries = sorted(self.group.primary_nodes(), key=lambda n: n.port)
        self.before = {n.port for n in primaries}
        victim = primaries[int(pick * len(primaries))]
        victim.kill()
        return victim

    def wait_promoted(self, old_port: int, timeout: float) -> int:
        """Until a node that was not a primary serves as one (the victim's replica)."""
        found: list[int] = []

        def promoted() -> bool:
            now = {n.port for n in self.group.primary_nodes()}
            found[:] = sorted(now - self.before)
            return len(now) == self.group.primaries_n and old_port not in now and bool(found)

        self.group.until(promoted, time.monotonic() + timeout,
                         f"a replica promoted in place of :{old_port}")
        return found[0]

    def restart(self, node: LocalRedis, timeout: float = 60.0) -> None:
        node.start(timeout=timeout)

    def wait_replica(self, node: LocalRedis, timeout: float) -> None:
        def synced() -> bool:
            info = cast(dict[str, object], node.client().info("replication"))
            return info.get("role") == "slave" and info.get("master_link_status") == "up"

        self.group.until(synced, time.monotonic() + timeout,
                         f"node {node.port} to replicate with its link up")


class ClusterInjector(Injector):
    """The injector's reads, added up over the run's partitions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.cluster, ClusterProcesses)
        self.failover = ClusterFailover(self.cluster.redis_cluster)
        self._tags: list[str] = []
        self.victim_tags: list[str] = []  # the partitions of the primary killed last

    def tags(self) -> list[str]:
        if not self._tags:
            self._tags = run_layout(self.client, self.keys, self.run_id)[1]
        return self._tags

    def parts(self) -> list[Keys]:
        return [self.keys.partition(tag) for tag in self.tags()]

    def holds(self, consumer_id: str) -> int:
        return sum(int(self.client.llen(part.inflight(consumer_id, n)))
                   for part in self.parts() for n in range(self.threads))

    def committed_by(self, consumer_id: str) -> int:
        return sum(int(self.client.hget(part.run(self.run_id).by_consumer, consumer_id) or 0)
                   for part in self.parts())

    def committed_counts(self) -> dict[str, int]:
        return {part.tag or "": int(self.client.get(part.run(self.run_id).committed) or 0)
                for part in self.parts()}

    def committed(self) -> int:
        return sum(self.committed_counts().values())

    def acknowledged_counts(self) -> dict[str, int]:
        counts = self.committed_counts()
        replication = Replication(self.cluster.min_replicas)
        for part in self.parts():
            acks = part.run(self.run_id).acks
            replication.barrier(node_client(self.client, acks), acks, ACK_FIELD)
        return counts

    def pushed(self) -> tuple[int, int]:
        planned = self.client.hget(self.keys.run(self.run_id).meta, "batches")
        return (sum(int(self.client.bitcount(part.run(self.run_id).pushed))
                    for part in self.parts()), int(planned or 0))

    def failover_group(self) -> ClusterFailover:
        return self.failover

    def kill_primary(self, episode: Episode) -> LocalRedis:
        victim = self.failover.kill_primary(episode.pick)
        # The partitions it served (by the slot map of before the kill): "recovered" is a
        # commit in one of those, not anywhere (the other partitions never stopped).
        self.victim_tags = [part.tag or "" for part in self.parts()
                            if node_client(self.client, part.queue).connection_pool
                            .connection_kwargs.get("port") == victim.port]
        return victim

    def resumed_after(self, counts: dict[str, int]) -> bool:
        if not self.victim_tags:  # it served none of the run's partitions
            return super().resumed_after(counts)
        now = self.committed_counts()
        return (any(now.get(tag, 0) > counts.get(tag, 0) for tag in self.victim_tags)
                or sum(now.values()) >= self.items)
