"""A throwaway ``redis-server`` on a free loopback port, for ``make run``, tests and benchmarks.

It runs with the settings the guarantees assume (``appendonly yes``, ``appendfsync always``,
``maxmemory-policy noeviction``) in a data directory of its own, so it can be killed with
SIGKILL and started again on the same port and data, as a crashed Redis would be.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import cast

import redis


def _ephemeral_floor() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections' local ports)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_handed_out: set[int] = set()


def free_port(also: int | None = None) -> int:
    """A loopback port that is free now, with ``port + also`` free too when given (a cluster
    node's bus port).

    The ports lie below the kernel's ephemeral range, so that no outgoing connection (a
    replica's link, a client) can take one between now and the server's bind, and none is
    handed out twice in this process: a port picked while others were still unbound would
    otherwise be free for the next pick as well. Either collision makes a server exit at once
    on "Address already in use", and a group that waits for it waits in vain."""
    top = _ephemeral_floor() - (also or 0)
    for _ in range(1000):
        port = random.randrange(10000, top)
        wanted = [port] if also is None else [port, port + also]
        if _handed_out.isdisjoint(wanted) and all(_bindable(p) for p in wanted):
            _handed_out.update(wanted)
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def kill_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL, as a crash would (a stopped process dies too), and reap it."""
    if process and process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, and SIGKILL if it has not exited 10 s later."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_process(process)


class LocalRedis:
    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        *,
        fsync: str = "always",
        extra_args: list[str] | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_dir: Path | None = None,
    ) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not on PATH (Debian: apt-get install redis-server)")
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="exactsum-redis-"))
        self.fsync = fsync
        self.extra_args = extra_args or []
        self.username, self.password = username, password
        # A directory with cert.pem and key.pem: serve TLS only, with that self-signed pair.
        self.tls_dir = tls_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls_dir:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls_dir / 'cert.pem'}"
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, username=self.username,
                                    password=self.password)

    def start(self, timeout: float = 10.0) -> None:
        if self.tls_dir:
            ports = ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", str(self.tls_dir / "cert.pem"),
                     "--tls-key-file", str(self.tls_dir / "key.pem"),
                     "--tls-ca-cert-file", str(self.tls_dir / "cert.pem"),
                     "--tls-auth-clients", "no"]
        else:
            ports = ["--port", str(self.port)]
        args = [
            self.binary or "redis-server",
            *ports,
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}; see "
                        f"{self.data_dir / 'redis.log'}"
                    ) from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} did not answer")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown save, the AOF is all that survives."""
        kill_process(self.process)

    def stop(self) -> None:
        stop_process(self.process)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replica_linked(replica: LocalRedis) -> bool:
    """Whether ``replica``'s link to its primary is up."""
    info = cast(dict[str, object], replica.client().info("replication"))
    return info.get("master_link_status") == "up"
