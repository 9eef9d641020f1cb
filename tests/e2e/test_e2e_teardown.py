"""The e2e teardown (stack.remove_project) leaves nothing of a project behind even when its
`down` removed nothing: a test's `down` interrupted by its timeout, or timed out itself, while
a one-off `run` container still holds the project's network and a volume."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from .stack import compose_env, leftovers, remove_project

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(180)
def test_a_project_whose_down_did_nothing_is_removed_through_the_engine(
    docker_client: Any, images: dict[str, str], tmp_path: Path
) -> None:
    compose_file = tmp_path / "compose.yml"
    compose_file.write_text(
        "services:\n"
        "  idle:\n"
        f"    image: {images['python']}\n"
        '    command: ["sleep", "600"]\n'
        '    volumes: ["data:/data"]\n'
        "volumes:\n"
        "  data: {}\n")
    project = f"exactsum-e2e-teardown-{uuid.uuid4().hex[:6]}"
    base = ["docker", "compose", "-f", str(compose_file), "-p", project]
    env = compose_env({})
    try:
        for args in (["up", "--detach"], ["run", "--detach", "idle"]):
            started = subprocess.run([*base, *args], env=env, capture_output=True, text=True,
                                     timeout=120, stdin=subprocess.DEVNULL)
            assert started.returncode == 0, started.stderr[-2000:]
        before = leftovers(docker_client, project)
        assert len(before["containers"]) == 2, before  # the service's and the one-off's
        assert before["networks"] and before["volumes"], before
        remove_project(docker_client, project, ["true"], tmp_path, env)  # a `down` that did nothing
        assert leftovers(docker_client, project) == {
            "containers": [], "networks": [], "volumes": []}
    finally:
        remove_project(docker_client, project, [*base, "down", "--volumes", "--remove-orphans",
                                                "--timeout", "2"], tmp_path, env)
