"""A compose project for one end-to-end test: the compose CLI for the stack, the docker SDK for
its containers, and ``redis-cli`` inside the Redis container to look at the run.

Redis is not published on the host and the tests never reach into the containers' network:
everything they read from Redis goes through ``docker compose exec``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
from docker.models.containers import Container

from exactsum.keys import Keys
from exactsum.protocol import ForeignElement, decode
from tests.launch import parse_report
from tests.localredis import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOTENV = ROOT / ".env"

# Tag of the images the tests build, so that they never replace a user's `latest`.
IMAGE_TAG = "e2e"

# Host variables that compose would hand to the services (the compose file passes them
# through); a stray one, such as a REDIS_URL meant for a local redis-server, must not leak in.
_SERVICE_VARS = re.compile(
    r"^(REDIS_|KEY_PREFIX$|LOG_LEVEL$|LOG_FORMAT$|PRODUCER_|CONSUMER_|DASHBOARD_|METRICS_|"
    r"EXACTSUM_IMAGE_|COMPOSE_|TRANSPORT$|RQ_)"
)

T = TypeVar("T")


def base_images() -> dict[str, str]:
    """PYTHON_IMAGE and REDIS_IMAGE from the environment, or else from the checkout's .env
    (where `make images-offline` writes them). The tests give compose no .env of their own,
    so that a developer's other settings there do not change what a test runs."""
    found: dict[str, str] = {}
    if DOTENV.exists():
        for line in DOTENV.read_text(encoding="utf-8").splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() in ("PYTHON_IMAGE", "REDIS_IMAGE"):
                found[name.strip()] = value.split(" #", 1)[0].strip().strip("\"'")
    for name in ("PYTHON_IMAGE", "REDIS_IMAGE"):
        if os.environ.get(name):
            found[name] = os.environ[name]
    return found


def compose_env(settings: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _SERVICE_VARS.match(k)}
    env.update(base_images())
    env["EXACTSUM_IMAGE_TAG"] = IMAGE_TAG
    # The dashboards publish a port on the host's loopback: free ones, not 8080 and 9181.
    env["DASHBOARD_PORT"] = str(free_port())
    env["RQ_DASHBOARD_PORT"] = str(free_port())
    env.update(settings)
    return env


def remove_project(client: docker.DockerClient, project: str, down: Sequence[str],
                   cwd: Path, env: Mapping[str, str]) -> None:
    """Whatever compose project ``project`` left, however its test ended: ``down`` (the
    project's `docker compose ... down --volumes`) first, then, through the engine, what it left
    behind. A one-off `run` container whose CLI a timeout killed is still running and attached
    to the project's network, so that `down` cannot remove the network (nor a volume in use);
    a `down` that timed out itself removed nothing. Containers go first, then the networks and
    volumes they held. What cannot be removed is raised at the end, so that a leak is said."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(list(down), cwd=cwd, env=dict(env), capture_output=True, timeout=180,
                       stdin=subprocess.DEVNULL)
    label = {"label": f"com.docker.compose.project={project}"}
    left: list[str] = []
    for container in client.containers.list(all=True, filters=label):
        with _gone_or_said(left, f"container {container.name}"):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters=label):
        with _gone_or_said(left, f"network {network.name}"):
            network.remove()
    for volume in client.volumes.list(filters=label):
        with _gone_or_said(left, f"volume {volume.name}"):
            volume.remove(force=True)
    assert not left, f"compose project {project} left behind: {'; '.join(left)}"


def leftovers(client: docker.DockerClient, project: str) -> dict[str, list[str]]:
    """What the engine still holds of compose project ``project``."""
    label = {"label": f"com.docker.compose.project={project}"}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=label)],
        "networks": [n.name for n in client.networks.list(filters=label)],
        "volumes": [v.name for v in client.volumes.list(filters=label)],
    }


@contextlib.contextmanager
def _gone_or_said(left: list[str], what: str) -> Iterator[None]:
    """A removal: fine if the object went meanwhile (a `run --rm` container ending on its
    own), noted in ``left`` if the engine refused."""
    try:
        yield
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        left.append(f"{what}: {exc.explanation or exc}")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.3) -> T:
    """Call ``probe`` until it returns something other than None or False; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class RunState:
    """What Redis holds about one run, read while it is going on."""

    items: int
    expected_sum: int | None
    committed: int
    sum: int
    dead_items: int
    queued_items: int
    queued_sum: int
    inflight_keys: list[str]
    heartbeats: list[str]


class RunReader(ABC):
    """A run's figures read from the stack's Redis through ``redis-cli`` in its container (the
    compose stack and the Swarm stack differ only in how they reach that container)."""

    keys: Keys
    # How long and how often wait_committed polls: each poll is a `docker exec`.
    wait_timeout: float = 90
    wait_every: float = 0.3

    @abstractmethod
    def redis(self, *args: str) -> list[str]:
        """``redis-cli --raw ARGS`` in the Redis container: its output's lines."""

    def number(self, key: str) -> int:
        """An integer key's value; 0 when the key does not exist."""
        lines = self.redis("GET", key)
        return int(lines[0]) if lines and lines[0] else 0

    def committed(self, run_id: str) -> int:
        return self.number(self.keys.run(run_id).committed)

    def reclaimed(self) -> int:
        """Elements moved back to the queue: from dead consumers, or given back on a stop."""
        return self.number(self.keys.reclaimed)

    def scan(self, pattern: str) -> list[str]:
        return [k for k in self.redis("--scan", "--pattern", pattern) if k]

    def heartbeats(self) -> int:
        """Consumers whose heartbeat is alive."""
        return len(self.scan(self.keys.heartbeat("*")))

    def wait_committed(self, run_id: str, at_least: int, timeout: float | None = None) -> int:
        return wait_for(f"{at_least} items of run {run_id} committed",
                        lambda: (n := self.committed(run_id)) >= at_least and n,
                        timeout or self.wait_timeout, every=self.wait_every)


class Stack(RunReader):
    """One compose project. Its settings are fixed for its life: compose recreates a service
    whose settings change between two commands, which would be a different test."""

    def __init__(self, client: docker.DockerClient, project: str, settings: Mapping[str, str]):
        self.client = client
        self.project = project
        self.env = compose_env(settings)
        self.keys = Keys(settings.get("KEY_PREFIX", "pc"))

    # -- compose ---------------------------------------------------------------------------

    def command(self, *args: str) -> list[str]:
        return ["docker", "compose", "--env-file", os.devnull, "-f", str(COMPOSE_FILE),
                "-p", self.project, *args]

    def compose(self, *args: str, timeout: float = 180, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        command = self.command(*args)
        result = subprocess.run(command, env=self.env, cwd=ROOT, capture_output=True, text=True,
                                timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command[2:])} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
            )
        return result

    def up(self, *services: str, scale: Mapping[str, int] | None = None,
           no_deps: bool = False) -> None:
        args = ["up", "--detach", "--no-build"]
        if no_deps:
            args.append("--no-deps")
        for service, count in (scale or {}).items():
            args += ["--scale", f"{service}={count}"]
        self.compose(*args, *services)

    def down(self) -> None:
        """The project gone, with its networks and volumes (:func:`remove_project`)."""
        # Every profile's services: without --profile '*', compose leaves those of a profile that
        # is not enabled running (the rq test's), and with them the project's network.
        remove_project(self.client, self.project,
                       self.command("--profile", "*", "down", "--volumes", "--remove-orphans",
                                    "--timeout", "2"), ROOT, self.env)

    def logs(self, tail: int = 200) -> str:
        result = self.compose("logs", "--no-color", "--timestamps", "--tail", str(tail),
                              check=False, timeout=60)
        return result.stdout + result.stderr

    # -- containers ------------------------------------------------------------------------

    def containers(self, service: str | None, oneoff: bool | None = False) -> list[Container]:
        labels = [f"com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        if oneoff is not None:
            labels.append(f"com.docker.compose.oneoff={'True' if oneoff else 'False'}")
        found = self.client.containers.list(all=True, filters={"label": labels})
        return sorted(found, key=lambda c: c.name)

    def container(self, service: str) -> Container:
        found = self.containers(service)
        assert len(found) == 1, f"expected one {service} container, found {len(found)}"
        return found[0]

    def wait_exit(self, container: Container, timeout: float) -> int:
        status = container.wait(timeout=timeout)
        return int(status["StatusCode"])

    def healthy(self, service: str, count: int) -> bool:
        found = self.containers(service)
        for container in found:
            container.reload()
        return len(found) == count and all(
            c.attrs["State"].get("Health", {}).get("Status") == "healthy" for c in found
        )

    @staticmethod
    def report(container: Container) -> dict[str, Any]:
        """The producer's JSON report, from its container's stdout."""
        return Stack.report_from_text(container.logs(stdout=True, stderr=False).decode())

    @staticmethod
    def report_from_text(stdout: str) -> dict[str, Any]:
        """The producer's JSON report: the last line of its stdout."""
        report = parse_report(stdout)
        assert report is not None, f"the producer printed no report: {stdout[-1000:]}"
        return report

    # -- Redis, from inside its container --------------------------------------------------

    def redis(self, *args: str, check: bool = True) -> list[str]:
        result = self.compose("exec", "-T", "redis", "redis-cli", "--raw", *args, timeout=30,
                              check=check)
        return result.stdout.splitlines() if result.returncode == 0 else []

    def run_state(self, run_id: str) -> RunState:
        rk = self.keys.run(run_id)
        meta_lines = self.redis("HGETALL", rk.meta)
        meta = dict(zip(meta_lines[::2], meta_lines[1::2], strict=True))
        queued_items = queued_sum = 0
        for element in self.redis("LRANGE", self.keys.queue, "0", "-1"):
            try:
                batch = decode(element.encode())
            except ForeignElement:
                continue
            if batch.run_id == run_id:
                queued_items += batch.count
                queued_sum += batch.total

        number = self.number
        return RunState(
            items=int(meta["items"]),
            expected_sum=int(meta["expected_sum"]) if "expected_sum" in meta else None,
            committed=number(rk.committed),
            sum=number(rk.sum),
            dead_items=number(rk.dead_items),
            queued_items=queued_items,
            queued_sum=queued_sum,
            inflight_keys=self.scan(self.keys.inflight_pattern),
            heartbeats=self.scan(self.keys.heartbeat("*")),
        )
