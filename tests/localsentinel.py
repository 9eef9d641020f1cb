"""A throwaway Redis Sentinel setup on loopback: one primary, replicas, and Sentinels.

For the failover tests and the chaos run (``--redis sentinel``). Every node is a
:class:`~exactsum.localredis.LocalRedis` (``appendonly yes``, ``appendfsync always``) in a data
directory of its own, so a node can be killed with SIGKILL and started again on its data, as a
crashed machine would come back. A node that comes back is started as a primary, as a machine
whose configuration still says so would be: Sentinel must notice and turn it into a replica of
the primary it promoted meanwhile (its data is then replaced by the new primary's).

The Sentinels are ``redis-sentinel`` (Debian's package of that name), or ``redis-server
--sentinel`` where only redis-server is installed: the same program.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import cast

import redis

from tests.localredis import LocalRedis, free_port, kill_process, stop_process
from tests.redisgroup import RedisGroup

HOST = "127.0.0.1"


class SentinelProcess:
    def __init__(self, port: int, work_dir: Path, master: str, primary_port: int, quorum: int,
                 down_after_ms: int, failover_timeout_ms: int, node_password: str | None) -> None:
        self.port = port
        self.dir = work_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "sentinel.conf"
        # Sentinel rewrites this file as it learns (replicas, other Sentinels, epochs).
        self.config.write_text("\n".join([
            f"port {port}",
            f"bind {HOST}",
            f"dir {self.dir}",
            "daemonize no",
            f"logfile {self.dir / 'sentinel.log'}",
            f"sentinel monitor {master} {HOST} {primary_port} {quorum}",
            f"sentinel down-after-milliseconds {master} {down_after_ms}",
            f"sentinel failover-timeout {master} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master} 1",
            *([f"sentinel auth-pass {master} {node_password}"] if node_password else []),
            "",
        ]))
        self.process: subprocess.Popen[bytes] | None = None
        self._client: redis.Redis | None = None

    def start(self) -> None:
        binary = shutil.which("redis-sentinel")
        if binary:
            args = [binary, str(self.config)]
        else:
            server = shutil.which("redis-server")
            if server is None:
                raise RuntimeError("neither redis-sentinel nor redis-server is on PATH "
                                   "(Debian: apt-get install redis-sentinel)")
            args = [server, str(self.config), "--sentinel"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_up(self, deadline: float) -> None:
        """Until it answers PING; a Sentinel that exited (a port taken, a bad config) is said at
        once, with its log, instead of being waited for until the deadline."""
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Sentinel on port {self.port} exited with "
                                   f"{self.process.returncode}: {self.log_text()[-2000:]}")
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Sentinel on port {self.port} did not answer: "
                                   f"{self.log_text()[-2000:]}")
            time.sleep(0.05)

    def describe(self, master: str) -> str:
        """What it knows of ``master``, and its log's end: for a group that never got ready."""
        alive = "running" if self.process and self.process.poll() is None else "exited"
        try:
            state: object = self.client().sentinel_master(master)
        except redis.RedisError as exc:
            state = repr(exc)
        return (f"Sentinel {self.port} ({alive}): {state}\n"
                f"{self.log_text()[-1500:]}")

    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis(HOST, self.port, socket_timeout=2.0)
        return self._client

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        stop_process(self.process)

    def log_text(self) -> str:
        try:
            return (self.dir / "sentinel.log").read_text(errors="replace")
        except OSError:
            return ""


class LocalSentinelGroup(RedisGroup):
    """One primary, ``replicas`` replicas and ``sentinels`` Sentinels on free loopback ports."""

    def __init__(self, *, replicas: int = 2, sentinels: int = 3, master: str = "mymaster",
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000,
                 min_replicas_to_write: int = 0, work_dir: Path | None = None,
                 password: str | None = None) -> None:
        super().__init__("exactsum-sentinel-", work_dir)
        self.master = master
        # A primary cut off from every replica refuses writes instead of taking writes that
        # the failover would throw away (Redis' min-replicas-to-write).
        self.node_args = (["--min-replicas-to-write", str(min_replicas_to_write),
                           "--min-replicas-max-lag", "10"] if min_replicas_to_write else [])
        if password:
            # Every node may become a replica, so every node knows the password of the others.
            self.node_args += ["--requirepass", password, "--masterauth", password]
        for i in range(1 + replicas):
            self.nodes.append(LocalRedis(data_dir=self.node_dir(f"node{i}"),
                                         extra_args=list(self.node_args),
                                         password=password))
        primary_port = self.nodes[0].port
        for node in self.nodes[1:]:
            node.extra_args += ["--replicaof", HOST, str(primary_port)]
        quorum = sentinels // 2 + 1
        self.sentinels = [
            SentinelProcess(free_port(), self.work_dir / f"sentinel{i}", master, primary_port,
                            quorum, down_after_ms, failover_timeout_ms, password)
            for i in range(sentinels)
        ]

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple((HOST, s.port) for s in self.sentinels)

    @property
    def addresses_text(self) -> str:
        """``REDIS_SENTINELS`` for the services."""
        return ",".join(f"{host}:{port}" for host, port in self.addresses)

    @property
    def url(self) -> str:
        """``REDIS_URL`` to go with it: only the database is read from it."""
        return f"redis://{HOST}:{self.nodes[0].port}/0"

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start(timeout=timeout)
        deadline = time.monotonic() + timeout
        for node in self.nodes[1:]:
            self.wait_replica(node, deadline - time.monotonic())
        for sentinel in self.sentinels:
            sentinel.start()
        for sentinel in self.sentinels:
            sentinel.wait_up(deadline)
        replicas, others = len(self.nodes) - 1, len(self.sentinels) - 1
        try:
            for sentinel in self.sentinels:
                self.until(partial(self._sees, sentinel, replicas, others), deadline,
                           "every Sentinel to see the replicas and the other Sentinels")
        except TimeoutError as exc:
            roles = ", ".join(f"{n.port}: {self.role(n)}" for n in self.nodes)
            seen = "\n".join(s.describe(self.master) for s in self.sentinels)
            raise TimeoutError(f"{exc}\nnodes {roles}\n{seen}") from None

    def _sees(self, sentinel: SentinelProcess, replicas: int, others: int) -> bool:
        try:
            state = cast(dict[str, object], sentinel.client().sentinel_master(self.master))
        except redis.RedisError:
            return False
        return (int(cast(int, state.get("num-slaves", 0))) >= replicas
                and int(cast(int, state.get("num-other-sentinels", 0))) >= others)

    def primary_port(self) -> int | None:
        """The primary's port as the Sentinels' majority names it; None when they disagree or
        none answers."""
        seen: dict[int, int] = {}
        for sentinel in self.sentinels:
            try:
                found = cast(tuple[str, int] | None,
                             sentinel.client().sentinel_get_master_addr_by_name(self.master))
            except redis.RedisError:
                continue
            if found:
                port = int(found[1])
                seen[port] = seen.get(port, 0) + 1
        for port, votes in seen.items():
            if votes > len(self.sentinels) // 2:
                return port
        return None

    def node(self, port: int) -> LocalRedis:
        return next(n for n in self.nodes if n.port == port)

    def current_primary(self) -> LocalRedis | None:
        """The primary the Sentinels' majority names now (None while they disagree)."""
        port = self.primary_port()
        return None if port is None else self.node(port)

    def primary(self) -> LocalRedis:
        port = self.primary_port()
        if port is None:
            raise RuntimeError("the Sentinels name no primary")
        return self.node(port)

    def kill_primary(self) -> LocalRedis:
        """kill -9 the primary the Sentinels name; returns it (stopped)."""
        victim = self.primary()
        victim.kill()
        return victim

    def wait_promoted(self, old_port: int, timeout: float) -> int:
        """Until the Sentinels name a primary other than ``old_port`` and it answers as one."""
        deadline = time.monotonic() + timeout
        while True:
            port = self.primary_port()
            if port is not None and port != old_port and self.role(self.node(port)) == "master":
                return port
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica was promoted within {timeout} s")
            time.sleep(0.05)

    @staticmethod
    def role(node: LocalRedis) -> str:
        try:
            info = cast(dict[str, object], node.client().info("replication"))
        except redis.RedisError:
            return "down"
        return str(info.get("role"))

    def restart(self, node: LocalRedis, timeout: float = 60.0) -> None:
        """Start a killed node again on its data, as a primary (see the module's doc)."""
        node.extra_args = list(self.node_args)
        node.start(timeout=timeout)

    def wait_replica(self, node: LocalRedis, timeout: float) -> None:
        """Until ``node`` replicates from a primary with the link up."""
        deadline = time.monotonic() + timeout

        def linked() -> bool:
            try:
                info = cast(dict[str, object], node.client().info("replication"))
            except redis.RedisError:
                return False
            return info.get("role") == "slave" and info.get("master_link_status") == "up"

        self.until(linked, deadline, f"node {node.port} to replicate with its link up")

    def stop_others(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()

    def kill_all(self) -> None:
        """SIGKILL everything (a test that failed half-way)."""
        for sentinel in self.sentinels:
            kill_process(sentinel.process)
        for node in self.nodes:
            node.kill()
