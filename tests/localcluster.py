"""A throwaway Redis Cluster on loopback: N primaries, each with R replicas, for tests and
benchmarks.

Every node is a ``redis-server`` in cluster mode with the settings the guarantees assume
(``appendonly yes``, ``appendfsync always``, ``noeviction``), on a free port and in a data
directory of its own, so a node can be killed with SIGKILL and started again on the same port
and data, where it rejoins the cluster (as a replica if its replica was promoted meanwhile).

The cluster is assembled with CLUSTER ADDSLOTSRANGE, MEET and REPLICATE rather than
``redis-cli --cluster create``, which refuses fewer than three primaries (the benchmark runs
one and two).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.localredis import LocalRedis, free_port
from tests.redisgroup import RedisGroup

SLOTS = 16384
# A node also listens on its port + 10000 (the cluster bus), which must be a port too.
BUS_OFFSET = 10000


class LocalCluster(RedisGroup):
    def __init__(self, primaries: int = 3, replicas: int = 1, *, node_timeout_ms: int = 2000,
                 fsync: str = "always", acl_file: Path | None = None,
                 admin: tuple[str, str] | None = None, work_dir: Path | None = None) -> None:
        """``acl_file``: every node loads it; ``admin`` (user, password) is then the user this
        harness assembles the cluster as, and the one replicas sync with (``masteruser``)."""
        acl_args: list[str] = []
        username, password = admin or (None, None)
        if acl_file is not None:
            if username is None or password is None:
                raise ValueError("a cluster with an ACL file needs an admin user")
            acl_args = ["--aclfile", str(acl_file), "--masteruser", username,
                        "--masterauth", password]
        super().__init__("exactsum-cluster-", work_dir)
        self.primaries_n, self.replicas_n = primaries, replicas
        for index in range(primaries * (1 + replicas)):
            port = free_port(also=BUS_OFFSET)
            data = self.node_dir(f"node{index}")
            self.nodes.append(LocalRedis(port, data, fsync=fsync, extra_args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                # A primary whose slots are being failed over should not stop the others.
                "--cluster-require-full-coverage", "no",
                "--cluster-replica-validity-factor", "0",
                # Start a replica's first sync at once (7.0 waits 5 s for more replicas).
                "--repl-diskless-sync-delay", "0",
                *acl_args,
            ], username=username, password=password))

    @property
    def url(self) -> str:
        """A seed URL: any node will do, the client discovers the rest."""
        return self.nodes[0].url

    def live_url(self) -> str:
        """The URL of a node that is running (the seed may be the one a test killed)."""
        return self.live()[0].url

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        first = self.nodes[0].client()
        for index in range(self.primaries_n):
            low = index * SLOTS // self.primaries_n
            high = (index + 1) * SLOTS // self.primaries_n - 1
            self.nodes[index].client().execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)  # type: ignore[no-untyped-call]
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + timeout
        self.until(lambda: all(self._info(n)["cluster_known_nodes"] == str(len(self.nodes))
                               for n in self.nodes), deadline, "every node to know the others")
        for index in range(self.primaries_n):
            primary_id = self.node_id(self.nodes[index])
            for r in range(self.replicas_n):
                replica = self.nodes[self.primaries_n + index * self.replicas_n + r]
                replica.client().execute_command("CLUSTER", "REPLICATE", primary_id)  # type: ignore[no-untyped-call]
        self.wait_healthy(deadline - time.monotonic())

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every live node says the cluster is ok and every primary has its replicas."""
        deadline = time.monotonic() + timeout
        self.until(lambda: all(self._info(n)["cluster_state"] == "ok" for n in self.live()),
                   deadline, "cluster_state:ok on every node")
        self.until(self._replicas_in_sync, deadline, "every primary's replicas to be in sync")

    def live(self) -> list[LocalRedis]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def _replicas_in_sync(self) -> bool:
        masters = [n for n in self.live() if self._role(n) == "master"]
        wanted = min(self.replicas_n, len(self.live()) // max(1, len(masters)) - 1)
        return len(masters) == self.primaries_n and all(
            self._online_replicas(n) >= wanted for n in masters)

    @staticmethod
    def _online_replicas(node: LocalRedis) -> int:
        """Replicas done with their first sync (WAIT counts only those)."""
        info = node.client().info("replication")
        return sum(1 for key, value in info.items()
                   if key.startswith("slave") and isinstance(value, dict)
                   and value.get("state") == "online")

    def primary_nodes(self) -> list[LocalRedis]:
        return [n for n in self.live() if self._role(n) == "master"]

    def node_for_port(self, port: int) -> LocalRedis:
        return next(n for n in self.nodes if n.port == port)

    def owner_of_slot(self, slot: int) -> LocalRedis:
        """The live primary that serves ``slot`` now (by its own CLUSTER NODES view)."""
        for node in self.primary_nodes():
            if self._serves(node, slot):
                return node
        raise LookupError(f"no live primary serves slot {slot}")

    def _serves(self, node: LocalRedis, slot: int) -> bool:
        raw = node.client().execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        for line in text.splitlines():
            fields = line.split()
            if "myself" not in fields[2]:
                continue
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a migration under way, not ownership
                low, _, high = part.partition("-")
                if int(low) <= slot <= int(high or low):
                    return True
        return False

    def migrate_slot(self, slot: int, target: LocalRedis, *, keys_per_step: int = 1,
                     pause_s: float = 0.0) -> int:
        """Move ``slot`` to the primary ``target`` by hand, as ``redis-cli --cluster reshard``
        does: IMPORTING on the target, MIGRATING on the owner, MIGRATE of its keys a few at a
        time (``pause_s`` between steps keeps the slot's keys split between the two nodes for
        a while, which is what clients must survive), then SETSLOT NODE everywhere. Returns
        the number of keys moved."""
        source = self.owner_of_slot(slot)
        if source is target:
            raise ValueError(f"slot {slot} is already on {target.port}")
        source_id, target_id = self.node_id(source), self.node_id(target)
        src, dst = source.client(), target.client()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)  # type: ignore[no-untyped-call]
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)  # type: ignore[no-untyped-call]
        moved = 0
        while True:
            names = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, keys_per_step)  # type: ignore[no-untyped-call]
            if not names:
                break
            # Under an ACL the source logs in to the target as this harness' admin.
            auth = (["AUTH2", target.username, target.password]
                    if target.username and target.password else [])
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10000,  # type: ignore[no-untyped-call]
                                *auth, "KEYS", *names)
            moved += len(names)
            if pause_s:
                time.sleep(pause_s)
        # The target first, so that the slot is never owned by nobody (as redis-cli does).
        for node in [target, source, *(n for n in self.primary_nodes()
                                       if n not in (target, source))]:
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)  # type: ignore[no-untyped-call]
        return moved

    @staticmethod
    def node_id(node: LocalRedis) -> str:
        return str(node.client().execute_command("CLUSTER", "MYID").decode())  # type: ignore[no-untyped-call]

    @staticmethod
    def _role(node: LocalRedis) -> str:
        return str(node.client().info("replication")["role"])

    @staticmethod
    def _info(node: LocalRedis) -> dict[str, str]:
        raw = node.client().execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.strip().splitlines() if ":" in line)
