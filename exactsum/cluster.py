"""Redis Cluster: the client, the partitions of a run, and scripts acknowledged by replicas.

A run on a cluster is split into partitions (``exactsum.keys.Keys.partition``), each a hash tag,
so that every script touches the keys of one slot only; the partitions' tags are chosen so that
they spread evenly over the primaries. A script is sent to the primary that owns its slot, and
with ``--min-replicas N`` it is followed on the same connection by ``WAIT N timeout``: a write
that fewer than N replicas acknowledged counts as not acknowledged, and the caller's
:func:`exactsum.connection.retrying` sends it again (every script is safe to re-send). The WAIT and
its verdict are :meth:`exactsum.replication.Replication.execute`, the same as on a single primary
and under Sentinel (:class:`exactsum.replication.AcknowledgedScript`): :func:`connect` and
:func:`register_scripts` are the one seam where the three topologies part.

The cluster client fails fast like the single-Redis one (``Retry(..., 0)``): redirections
(MOVED, ASK) are followed by redis-py, and by :class:`AckedScript` for the scripts it sends
itself, but connection errors, CLUSTERDOWN and TRYAGAIN (a slot whose keys a resharding has
split between two nodes) come back to :func:`retrying`, which logs them, backs off and retries;
redis-py refreshes its slot map on the next command after a connection error, and
:class:`AckedScript` asks for a refresh itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot
from redis.retry import Retry

from exactsum.connection import RedisTarget, credentials_from_env, make_client, retrying
from exactsum.keys import Keys
from exactsum.replication import AcknowledgedScript, Replication
from exactsum.scripts import Scripts

log = logging.getLogger("exactsum.cluster")

# Partitions per primary when the producer is not told how many: two, so that a consumer
# thread usually finds one with work while another is being drained.
PARTITIONS_PER_PRIMARY = 2
# How long a service keeps trying to read the cluster's slot map at start.
DISCOVERY_S = 60.0
# MOVED and ASK replies followed by one script call before it gives up to `retrying` (which
# refreshes the slot map): a slot moves once per resharding step, so a few are plenty.
MAX_REDIRECTIONS = 5


class SlotMoved(redis.ConnectionError):
    """A script could not be placed: the cluster is down for its slot (CLUSTERDOWN during a
    failover), it was redirected to a node the map does not know, or redirected more than
    :data:`MAX_REDIRECTIONS` times; the slot map is being refreshed."""


def make_cluster_client(url: str, *, socket_timeout: float,
                        name: str | None = None) -> redis.Redis:
    """A cluster client seeded from any node's URL, failing fast like ``make_client``.

    It is typed as ``redis.Redis`` because the services call the same commands on both; the
    cluster client routes each by its key.
    """
    credentials = credentials_from_env()

    def discover() -> RedisCluster:
        # The constructor reads the slot map at once: a seed node that is down (restarting,
        # or failed over) is retried like any other call, for up to a minute.
        return RedisCluster.from_url(
            url,
            **credentials,
            socket_timeout=socket_timeout,
            socket_connect_timeout=min(socket_timeout, 5.0),
            socket_keepalive=True,
            retry=Retry(ExponentialWithJitterBackoff(), 0),
            client_name=name,
        )

    client = retrying(discover, "discover the cluster", log,
                      deadline=time.monotonic() + DISCOVERY_S)
    return cast(redis.Redis, client)


def connect(target: RedisTarget | str, *, socket_timeout: float,
            name: str | None = None) -> redis.Redis:
    """The client the options ask for (``RedisSettings.redis``): a cluster client
    when ``target.cluster`` is "1" (the URL is a node of one) or a node's URL; otherwise one
    primary, at the URL or wherever the Sentinels say it is (:func:`make_client`)."""
    if isinstance(target, str):
        target = RedisTarget(target)
    if target.cluster:
        seed = target.url if target.cluster == "1" else target.cluster
        return make_cluster_client(seed, socket_timeout=socket_timeout, name=name)
    return make_client(target, socket_timeout=socket_timeout, name=name)


def register_scripts(client: redis.Redis, *, min_replicas: int = 0,
                     replica_timeout: float = Replication().timeout_s) -> Scripts:
    """The scripts for ``client``, each call acknowledged by ``min_replicas`` replicas: on a
    cluster sent to its slot's primary and WAITed for there (:class:`AckedScript`), on one
    primary WAITed for on the same connection (:class:`AcknowledgedScript`)."""
    replication = Replication(min_replicas, replica_timeout)
    if isinstance(client, RedisCluster):
        cluster = client
        return Scripts.register(client, lambda source: AckedScript(cluster, source, replication))
    if replication.enabled:
        return Scripts.register(client, lambda source: AcknowledgedScript(
            client, source, replication))
    return Scripts.register(client)


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def as_cluster(client: redis.Redis) -> RedisCluster:
    if not isinstance(client, RedisCluster):
        raise TypeError("a Redis Cluster client is needed here")
    return client


def primaries(client: redis.Redis) -> list[str]:
    """Names (host:port) of the cluster's primaries, in the order of the slots they own."""
    cluster = as_cluster(client)
    slots = cluster.nodes_manager.slots_cache
    seen: dict[str, int] = {}
    for slot in sorted(slots):
        owner = slots[slot][0].name
        seen.setdefault(owner, slot)
    return sorted(seen, key=seen.__getitem__)


def slot_owner(client: redis.Redis, slot: int) -> str:
    return str(as_cluster(client).nodes_manager.slots_cache[slot][0].name)


def choose_tags(client: redis.Redis, count: int) -> list[str]:
    """``count`` partition tags, partition ``i`` on primary ``i mod primaries`` today.

    Tag ``i`` is ``"<i>-<k>"`` with the smallest ``k`` whose slot that primary owns, so the same
    topology always gives the same tags (a second run reuses the first run's queues). After a
    failover the replica that takes over owns the same slots, so the spread stays even; after a
    resharding a run keeps its tags (they are in its meta) and may be spread less evenly.
    """
    owners = primaries(client)
    tags = []
    for index in range(count):
        target = owners[index % len(owners)]
        k = 0
        while slot_owner(client, key_slot(f"{index}-{k}".encode())) != target:
            k += 1
        tags.append(f"{index}-{k}")
    return tags


def default_partitions(client: redis.Redis) -> int:
    return PARTITIONS_PER_PRIMARY * len(primaries(client))


class AckedScript(Script):
    """A script sent to the primary of its slot, then ``WAIT``ed for on the same connection.

    ``WAIT`` returns at once inside a script or MULTI, so it is sent after the script in one
    non-transactional pipeline on that primary's connection. All the script's keys must map to
    one slot: a script that would touch two slots is refused here, before Redis sees it.
    """

    def __init__(self, cluster: RedisCluster, source: str, replication: Replication) -> None:
        super().__init__(cluster, source)
        self.cluster = cluster
        self.replication = replication

    def __call__(self, keys: Sequence[Any] | None = None, args: Iterable[Any] | None = None,
                 client: Any = None) -> Any:
        keys = list(keys or [])
        args = list(args or [])
        slots = {key_slot(key.encode() if isinstance(key, str) else key) for key in keys}
        if len(slots) != 1:
            raise ValueError(f"a script's keys must map to exactly one slot; got {keys!r}")
        slot = slots.pop()
        asking: ClusterNode | None = None
        # A redirection means the script was not run: MOVED (the slot has moved; the map is
        # patched from the reply) and ASK (the slot is being migrated and its keys are on the
        # importing node) are followed at once, as redis-py follows them for other commands.
        # TRYAGAIN (the slot's keys are split between the two nodes right now) goes back to
        # the caller's `retrying`, which backs off until the migration has moved on.
        for _ in range(MAX_REDIRECTIONS):
            node = asking or self.cluster.nodes_manager.get_node_from_slot(slot)
            conn = self.cluster.get_redis_connection(node)
            try:
                return self._send_loading(conn, keys, args, asking=asking is not None)
            except redis.exceptions.MovedError as exc:
                log.debug("redis cluster: slot %d moved to %s:%s", slot, exc.host, exc.port)
                self.cluster.nodes_manager.move_slot(exc)
                asking = None
            except redis.exceptions.AskError as exc:
                asking = self.cluster.nodes_manager.get_node(exc.host or node.host, exc.port)
                if asking is None:  # a node the map does not know yet: re-read the map
                    self._refresh()
                    raise SlotMoved(f"ASK to an unknown node: {exc}") from exc
            except redis.exceptions.ClusterError as exc:
                self._refresh()
                raise SlotMoved(f"{type(exc).__name__}: {exc}") from exc
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError):
                self._refresh()
                raise
        self._refresh()
        raise SlotMoved(f"slot {slot}: still redirected after {MAX_REDIRECTIONS} hops")

    def _send_loading(self, conn: redis.Redis, keys: list[Any], args: list[Any], *,
                      asking: bool) -> Any:
        """:meth:`_send`, loading the script once where the node does not know it (a node
        restarted, promoted, or importing a slot it never served)."""
        try:
            return self._send(conn, keys, args, asking=asking)
        except redis.exceptions.NoScriptError:
            conn.script_load(self.script)
            return self._send(conn, keys, args, asking=asking)

    def _send(self, conn: redis.Redis, keys: list[Any], args: list[Any], *,
              asking: bool = False) -> Any:
        if not self.replication.enabled and not asking:
            return conn.evalsha(self.sha, len(keys), *keys, *args)
        # ASKING holds for the next command on the same connection only: one pipeline.
        pipe = conn.pipeline(transaction=False)
        if asking:
            pipe.execute_command("ASKING")  # type: ignore[no-untyped-call]
        pipe.evalsha(self.sha, len(keys), *keys, *args)
        return self.replication.execute(pipe)[-1]

    def _refresh(self) -> None:
        """Re-read the slot map, so that the retry goes to whoever owns the slot now."""
        try:
            self.cluster.nodes_manager.initialize()
        except Exception as exc:  # the retry finds out again; say why here
            log.warning("redis cluster: could not refresh the slot map yet (%s: %s)",
                        type(exc).__name__, exc)


class PartitionDirectory:
    """The partitions a consumer claims from, shared by its threads.

    Without Cluster it is the one untagged layout, for ever. On a cluster it is the set of tags
    that producers registered (``Keys.partitions``): the heartbeat thread reads it
    (:meth:`lookup`), writes its copy of the heartbeat in each partition, and only then shows
    the tags to the workers (:meth:`publish`). It only grows, so a thread never loses sight of
    a partition it holds claims in.
    """

    def __init__(self, keys: Keys, cluster: bool) -> None:
        self.keys = keys.home
        self.cluster = cluster
        self._lock = threading.Lock()
        self._tags: tuple[str | None, ...] = () if cluster else (None,)

    @property
    def tags(self) -> tuple[str | None, ...]:
        return self._tags

    def lookup(self, client: redis.Redis) -> tuple[str | None, ...]:
        """The tags known so far and any newly registered, in a stable order."""
        if not self.cluster:
            return self._tags
        found = sorted(t.decode() for t in cast(set[bytes], client.smembers(self.keys.partitions)))
        known = set(self._tags)
        return self._tags + tuple(tag for tag in found if tag not in known)

    def publish(self, tags: tuple[str | None, ...]) -> None:
        with self._lock:
            if len(tags) > len(self._tags):
                log.info("claiming from %d partitions (new: %s)", len(tags),
                         ", ".join(str(t) for t in tags[len(self._tags):]))
                self._tags = tags
