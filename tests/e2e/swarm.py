"""A Swarm stack for end-to-end tests, driven through scripts/stack.sh (what `make stack-*` runs),
and a one-node swarm on the local engine that is left as it was found.

Redis is read through ``docker exec`` into the Redis task's container: `docker service logs`
printed nothing on Debian's 20.10 engine, and the tests never join the overlay network.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import docker
from docker.models.containers import Container

from exactsum.keys import Keys

from .stack import ROOT, RunReader, compose_env

STACK_SCRIPT = ROOT / "scripts" / "stack.sh"
REDIS_LABEL = "exactsum.redis"


def swarm_state(client: docker.DockerClient) -> tuple[str, bool]:
    info = client.info()["Swarm"]
    return str(info.get("LocalNodeState", "")), bool(info.get("ControlAvailable"))


@contextmanager
def one_node_swarm(client: docker.DockerClient) -> Iterator[bool]:
    """The engine as a swarm manager for the duration; yields whether this call made the swarm.

    A swarm made here is left (`docker swarm leave --force`) at the end, whatever happens; one
    that existed stays, and only the Redis node label this call added is taken off again.
    """
    state, manager = swarm_state(client)
    initialised = False
    # Swarm makes this bridge for its tasks and leaves it behind when the node leaves.
    gwbridge_before = bool(client.networks.list(names=["docker_gwbridge"]))
    if state == "inactive":
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                       check=True, capture_output=True, timeout=120)
        initialised = True
    elif state != "active" or not manager:
        raise RuntimeError(f"this engine's swarm is {state!r} (manager: {manager}); the test "
                           "needs an inactive engine or a swarm manager")
    node_id = client.info()["Swarm"]["NodeID"]
    labelled_before = bool(client.nodes.list(filters={"node.label": f"{REDIS_LABEL}=true"}))
    try:
        yield initialised
    finally:
        if initialised:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True,
                           timeout=120, check=False)
            if not gwbridge_before:
                subprocess.run(["docker", "network", "rm", "docker_gwbridge"],
                               capture_output=True, timeout=60, check=False)
        elif not labelled_before:
            subprocess.run(["docker", "node", "update", "--label-rm", REDIS_LABEL, node_id],
                           capture_output=True, timeout=60, check=False)


class SwarmStack(RunReader):
    """One stack of deploy/stack.yml under its own name; settings fixed for its life."""

    wait_timeout, wait_every = 120, 0.5

    def __init__(self, client: docker.DockerClient, name: str, settings: Mapping[str, str]):
        self.client = client
        self.name = name
        env = compose_env(settings)
        # The checkout's .env may hold a developer's settings: only the base images count,
        # and compose_env has read those already.
        env.update({"STACK_NAME": name, "STACK_DOTENV": "", "STACK_WAIT": "240"})
        env.pop("REGISTRY", None)
        self.env = env
        self.keys = Keys(settings.get("KEY_PREFIX", "pc"))

    def script(self, *args: str, timeout: float = 300,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["bash", str(STACK_SCRIPT), *args]
        result = subprocess.run(command, env=self.env, cwd=ROOT, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(
                f"stack.sh {' '.join(args)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")
        return result

    def produce(self, args: list[str], stdin: IO[bytes], stdout: IO[bytes],
                stderr: IO[bytes]) -> subprocess.Popen[bytes]:
        """`stack.sh produce ARGS` in the background: the run's report goes to ``stdout``."""
        return subprocess.Popen(["bash", str(STACK_SCRIPT), "produce", *args], env=self.env,
                                cwd=ROOT, stdin=stdin, stdout=stdout, stderr=stderr)

    # -- containers of the stack's tasks ---------------------------------------------------

    def containers(self, service: str, running: bool = True) -> list[Container]:
        found = self.client.containers.list(
            all=not running,
            filters={"label": f"com.docker.swarm.service.name={self.name}_{service}"})
        return sorted(found, key=lambda c: c.name)

    def running_tasks(self, service: str) -> int:
        tasks = self.client.services.get(f"{self.name}_{service}").tasks(
            filters={"desired-state": "running"})
        return sum(1 for t in tasks if t["Status"]["State"] == "running")

    def logs(self, tail: int = 60) -> str:
        parts = []
        for service in ("redis", "consumer", "dashboard"):
            for container in self.containers(service, running=False):
                text = container.logs(tail=tail, timestamps=True).decode(errors="replace")
                parts.append(f"--- {container.name} ({container.status})\n{text}")
        return "\n".join(parts)

    # -- Redis, from inside the Redis task's container -------------------------------------

    def redis(self, *args: str) -> list[str]:
        containers = self.containers("redis")
        assert len(containers) == 1, f"expected one running Redis task, found {len(containers)}"
        code, output = containers[0].exec_run(["redis-cli", "--raw", *args])
        text = output.decode()
        assert code == 0, f"redis-cli {' '.join(args)} exited {code}: {text}"
        return text.splitlines()


def write_numbers(path: Path, numbers: list[int]) -> None:
    path.write_text("".join(f"{n}\n" for n in numbers), encoding="ascii")

