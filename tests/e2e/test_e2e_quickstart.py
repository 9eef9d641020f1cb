"""The README's quick start as a newcomer runs it, and `make down` leaving nothing behind.

The quick-start test clones HEAD into a temporary directory (what a newcomer gets: no .env, no
.venv) and runs the two commands of the README's first code block, read from the README itself,
so that the test fails when the README and what works drift apart. "test it" (`make test`) runs
with a PYTEST_ARGS selection of one real-Redis pipeline test: that proves the pre-flight,
`make install` in a clean clone and pytest against a real redis-server, where the whole suite
would run this test again inside itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.procs import random_sum

from .stack import IMAGE_TAG, ROOT, Stack, compose_env, leftovers, remove_project

pytestmark = pytest.mark.e2e

VERDICT = "verified exact: every item counted exactly once"
# The quick start's run is the default one (100,000 numbers in 1..11) drawn with this seed, set
# in the environment the commands run in, so that the test knows its sum (random_sum).
SEED = 21


def quick_start(readme: Path) -> dict[str, str]:
    """The commands of the first ``sh`` block under "## Quick start", keyed by what their
    comment says they do ("run it", "test it")."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)
    assert len(section) == 2, "README.md has no '## Quick start' section"
    block = re.search(r"```sh\n(.*?)```", section[1], re.S)
    assert block, "the quick start has no ```sh block"
    commands: dict[str, str] = {}
    for line in block.group(1).splitlines():
        command, _, comment = line.partition("#")
        purpose = comment.strip().split(":", 1)[0]
        if command.strip():
            commands[purpose] = command.strip()
    return commands


def project_env(project: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a make command on a compose project of the test's own: no service
    variables of the host, free loopback ports, images tagged for the tests, the up log here."""
    env = compose_env(settings)
    # compose_env reads PYTHON_IMAGE/REDIS_IMAGE from this checkout's .env; a clean clone must
    # find its own, as a newcomer's would.
    for name in ("PYTHON_IMAGE", "REDIS_IMAGE"):
        if name not in os.environ:
            env.pop(name, None)
    env.update(COMPOSE_PROJECT_NAME=project, UP_LOG=str(tmp_path / "up.log"))
    env.pop("MAKEFLAGS", None)
    env.pop("MAKELEVEL", None)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str],
        timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return (f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n"
            f"--- stderr\n{result.stderr[-3000:]}")


def take_down(client: Any, project: str, cwd: Path, env: dict[str, str]) -> None:
    """Whatever the test left, however it ended (project from COMPOSE_PROJECT_NAME)."""
    remove_project(client, project, ["docker", "compose", "--profile", "*", "down",
                                     "--volumes", "--remove-orphans", "--timeout", "2"], cwd, env)


def report_lines(stdout: str) -> dict[str, str]:
    """The report's `name : value` lines."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition(" : ")
        if sep:
            found[name.strip()] = value.strip()
    return found


def test_the_readme_names_two_commands_run_it_and_test_it() -> None:
    commands = quick_start(ROOT / "README.md")
    assert list(commands) == ["run it", "test it"], commands
    assert all(c.startswith("make ") for c in commands.values()), commands


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_quick_start_from_a_clean_clone(docker_client: Any, images: dict[str, str],
                                                tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the quick start sets up what a fresh host lacks as root")
    clone = tmp_path / "exactsum"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    commands = quick_start(clone / "README.md")
    suffix = uuid.uuid4().hex[:6]
    project, tag = f"exactsum-e2e-readme-{suffix}", f"{IMAGE_TAG}-readme-{suffix}"
    env = project_env(project, tmp_path, EXACTSUM_IMAGE_TAG=tag, PRODUCER_SEED=str(SEED))
    try:
        # Run it: the verdict is the last line a user sees, and the exit status is the run's.
        up = run(shlex.split(commands["run it"]), clone, env, timeout=600)
        assert up.returncode == 0, shown(up)
        lines = [line for line in up.stdout.splitlines() if line.strip()]
        assert lines[-1] == VERDICT, shown(up)
        assert "warn" not in (up.stdout + up.stderr).lower(), shown(up)
        report = report_lines(up.stdout)
        assert report["items produced"] == "100000", report
        assert report["items committed"] == "100000", report
        assert report["items lost"] == "0" and report["counted twice"] == "0", report
        assert report["the sum is"] == report["expected sum"] == str(random_sum(100_000, SEED)), (
            report)

        # Redis's own record of the run agrees with the report, read from the host with
        # `make status` (Redis is not published): the README's way to look at the stack.
        status = run(["make", "--no-print-directory", "status", "ARGS=--json"], clone, env,
                     timeout=120)
        assert status.returncode == 0, shown(status)
        runs = json.loads(status.stdout.splitlines()[-1])["runs"]
        assert len(runs) == 1, runs
        assert runs[0]["committed"] == 100_000 and runs[0]["state"] == "verified", runs[0]
        assert str(runs[0]["sum"]) == report["the sum is"], (runs[0], report)
        assert sum(runs[0]["by_consumer"].values()) == 100_000, runs[0]
        assert len(runs[0]["by_consumer"]) == 3, runs[0]

        # Test it: the same command with one real-Redis test selected (see the docstring).
        selection = ("PYTEST_ARGS=-v tests/integration/test_pipeline.py"
                     " -k three_consumers_sum_exactly")
        tested = run([*shlex.split(commands["test it"]), selection], clone, env, timeout=600)
        assert tested.returncode == 0, shown(tested)
        last = tested.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"=+ 1 passed(, \d+ deselected)? in [\d.]+s.* =+", last), last
        assert "test_three_consumers_sum_exactly PASSED" in tested.stdout, shown(tested)
    finally:
        try:
            take_down(docker_client, project, clone, env)
        finally:
            # The clone's images (their layers are the session's): only the tags of this test.
            for image in docker_client.images.list(filters={"reference": f"exactsum/*:{tag}"}):
                for name in image.tags:
                    if name.endswith(f":{tag}"):
                        docker_client.images.remove(name)


@pytest.mark.timeout(600)
def test_make_down_after_make_up_rq_leaves_nothing(docker_client: Any, images: dict[str, str],
                                                   tmp_path: Path) -> None:
    project = f"exactsum-e2e-down-{uuid.uuid4().hex[:6]}"
    env = project_env(project, tmp_path, EXACTSUM_IMAGE_TAG=IMAGE_TAG, PRODUCER_SEED=str(SEED),
                      PRODUCER_COUNT="20000", PRODUCER_BATCH="500", CONSUMER_REPLICAS="2")
    try:
        up = run(["make", "--no-print-directory", "up-rq"], ROOT, env, timeout=400)
        assert up.returncode == 0, shown(up)
        assert up.stdout.strip().splitlines()[-1] == VERDICT, shown(up)
        assert report_lines(up.stdout)["the sum is"] == str(random_sum(20_000, SEED)), shown(up)
        # What `make down` must remove: the RQ consumers and rq-dashboard keep serving.
        stack = Stack(docker_client, project, {})
        assert {c.labels["com.docker.compose.service"] for c in stack.containers(None)} == {
            "redis", "rq-consumer", "rq-dashboard", "rq-producer"}
        assert len(stack.containers("rq-consumer")) == 2
        assert all(c.status == "running" for c in stack.containers("rq-consumer"))
        before = leftovers(docker_client, project)
        assert before["networks"] and before["volumes"], before

        down = run(["make", "--no-print-directory", "down"], ROOT, env, timeout=120)
        assert down.returncode == 0, shown(down)
        assert "still in use" not in down.stderr, shown(down)
        assert leftovers(docker_client, project) == {
            "containers": [], "networks": [], "volumes": []}
    finally:
        take_down(docker_client, project, ROOT, env)
