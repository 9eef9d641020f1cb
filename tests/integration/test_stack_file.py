"""deploy/stack.yml beside docker-compose.yml, without Docker: the Swarm stack must run the
services as compose does (the same Redis durability, health checks and grace), and pass them
only settings they read. tests/e2e/test_swarm.py runs it on a real swarm."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_k8s_manifests import help_names

ROOT = Path(__file__).resolve().parents[2]


def load(path: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))
    return doc


STACK = load("deploy/stack.yml")["services"]
COMPOSE = load("docker-compose.yml")["services"]


def default(value: Any) -> str:
    """A compose value with its ${VAR:-default} replaced by the default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


@pytest.mark.parametrize(("service", "module"), [("consumer", "consumer_service"),
                                                 ("dashboard", "observe.dashboard")])
def test_environment_is_read_by_the_service(service: str, module: str) -> None:
    names, _ = help_names(module)
    unknown = set(STACK[service]["environment"]) - names
    assert not unknown, f"{service}: {sorted(unknown)} are not read by {module}"


def test_redis_is_as_durable_as_with_compose() -> None:
    stack, compose = STACK["redis"], COMPOSE["redis"]
    assert [default(a) for a in stack["command"]] == [default(a) for a in compose["command"]]
    assert stack["volumes"] == compose["volumes"] == ["redis-data:/data"]
    assert stack["deploy"]["replicas"] == 1
    assert stack["deploy"]["placement"]["constraints"]


def test_consumers_keep_compose_health_check_grace_and_init() -> None:
    stack, compose = STACK["consumer"], COMPOSE["consumer"]
    assert stack["healthcheck"]["test"] == compose["healthcheck"]["test"]
    assert default(stack["stop_grace_period"]) == default(compose["stop_grace_period"])
    grace = float(default(stack["environment"]["CONSUMER_GRACE"]))
    assert float(default(stack["stop_grace_period"]).rstrip("s")) > grace
    assert stack["init"] is True
    assert stack["image"] == compose["image"]
    assert stack["deploy"]["restart_policy"]["condition"] == "any"


def test_nothing_swarm_ignores() -> None:
    for name, service in STACK.items():
        for ignored in ("build", "depends_on", "container_name", "restart", "profiles"):
            assert ignored not in service, (name, ignored)
    assert "producer" not in STACK, "a producer service would be restarted after each run"
