"""Network namespaces of the run's own: one for Redis, one per consumer that can be cut off.

Layout (``<tag>`` is ``exs-<pid of the harness>``, so names are unique per run)::

    <tag>-r     redis-server, the producer, the ordinary consumers and the harness itself;
                lo up (they use 127.0.0.1), plus one end of each veth pair
    <tag>-c<n>  one partitionable consumer; the other end of veth pair n

Veth pair n carries the private link 10.213.<n>.0/30: ``.1`` on the Redis side, ``.2`` on the
consumer's side. Both ends are created directly inside the namespaces (``ip -n A link add ...
peer ... netns B``), so nothing is ever added to the machine's own network namespace, and all
traffic stays between namespaces this run made. Taking the consumer's end down (``ip -n
<tag>-c<n> link set ... down``) cuts that consumer off Redis; ``up`` brings it back.

Deleting a namespace deletes the veth ends in it; :meth:`Namespaces.teardown` first kills the
processes still in the namespaces (they can only be this run's: nothing else is started there).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

log = logging.getLogger("chaos.netns")

SUBNET = "10.213"


class NetnsError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "not running as root (network namespaces need CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return "the 'ip' command is missing (Debian: apt-get install iproute2)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20,
                            check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


@dataclass(frozen=True)
class Link:
    """Veth pair ``index``: the consumer's namespace and both ends' devices and addresses."""

    index: int
    namespace: str
    redis_dev: str
    consumer_dev: str

    @property
    def redis_addr(self) -> str:
        return f"{SUBNET}.{self.index}.1"

    @property
    def consumer_addr(self) -> str:
        return f"{SUBNET}.{self.index}.2"


@dataclass
class Namespaces:
    partitionable: int
    tag: str = field(default_factory=lambda: f"exs-{os.getpid()}")
    created: list[str] = field(default_factory=list)

    @property
    def redis_ns(self) -> str:
        return f"{self.tag}-r"

    @property
    def links(self) -> list[Link]:
        pid = self.tag.rsplit("-", 1)[-1]
        # Device names are at most 15 characters: "exs" + up to 7 pid digits + "r"/"c" + n.
        return [Link(n, f"{self.tag}-c{n}", f"exs{pid}r{n}", f"exs{pid}c{n}")
                for n in range(self.partitionable)]

    def create(self) -> None:
        remove_stale()
        try:
            for ns in [self.redis_ns, *(link.namespace for link in self.links)]:
                _ip("netns", "add", ns)
                self.created.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            for link in self.links:
                _ip("-n", self.redis_ns, "link", "add", link.redis_dev, "type", "veth",
                    "peer", "name", link.consumer_dev, "netns", link.namespace)
                _ip("-n", self.redis_ns, "addr", "add", f"{link.redis_addr}/30",
                    "dev", link.redis_dev)
                _ip("-n", link.namespace, "addr", "add", f"{link.consumer_addr}/30",
                    "dev", link.consumer_dev)
                _ip("-n", self.redis_ns, "link", "set", link.redis_dev, "up")
                _ip("-n", link.namespace, "link", "set", link.consumer_dev, "up")
        except (NetnsError, OSError, subprocess.TimeoutExpired):
            self.teardown()
            raise
        log.info("namespaces %s up", ", ".join(self.created))

    def teardown(self) -> None:
        """Kill what still runs in our namespaces, then delete them (and their veth ends)."""
        for ns in reversed(self.created):
            kill_namespace_processes(ns)
            result = _ip("netns", "del", ns, check=False)
            if result.returncode != 0:
                log.error("could not delete namespace %s: %s", ns, result.stderr.strip())
        self.created.clear()

    def set_link(self, link: Link, up: bool) -> None:
        _ip("-n", link.namespace, "link", "set", link.consumer_dev, "up" if up else "down")


def exec_prefix(namespace: str) -> list[str]:
    """Run a command inside ``namespace`` (``ip netns exec`` execs it: the pid is the command's)."""
    return ["ip", "netns", "exec", namespace]


def kill_namespace_processes(namespace: str) -> None:
    result = _ip("netns", "pids", namespace, check=False)
    for word in result.stdout.split():
        if word.isdigit() and int(word) != os.getpid():
            try:
                os.kill(int(word), signal.SIGCONT)
                os.kill(int(word), signal.SIGKILL)
            except ProcessLookupError:
                pass


_OURS = re.compile(r"^exs-(\d+)-(r|c\d+)$")


def remove_stale() -> None:
    """Delete namespaces left by an earlier run of this harness whose process is gone."""
    result = _ip("netns", "list", check=False)
    for line in result.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _OURS.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        log.warning("deleting namespace %s left by an earlier run (pid %s is gone)", name,
                    match.group(1))
        _ip("netns", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
