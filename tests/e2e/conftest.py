"""Fixtures of the end-to-end tests: a Docker engine, the images (built once per session), and
one compose project per test, always torn down: ``down -v``, then whatever it left (containers,
networks, volumes) through the engine, even when the test failed half-way.

Without a reachable engine these tests skip, except in CI (``CI=true``), where that is a failure:
CI prepares an engine, and a run that quietly tested nothing must not pass.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from .stack import COMPOSE_FILE, IMAGE_TAG, ROOT, Stack, compose_env


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI needs a Docker engine for the e2e tests: {reason}", pytrace=False)
    pytest.skip(f"no Docker engine: {reason}")


@pytest.fixture(scope="session")
def docker_client() -> Any:
    try:
        import docker
    except ImportError:
        _unavailable("the docker SDK is not installed (pip install -e '.[dev]')")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        _unavailable(f"{type(exc).__name__}: {exc} (`sudo make host-setup` sets one up)")
    try:
        version = subprocess.run(["docker", "compose", "version", "--short"],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"no docker CLI: {exc}")
    if version.returncode != 0:
        _unavailable(f"no compose plugin: {version.stderr.strip()}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def images(docker_client: Any) -> dict[str, str]:
    """Build the producer, consumer, dashboard and rq-dashboard images once, tagged for the
    tests; every test reuses them (its compose commands pass --no-build). The rq profile's
    producer and consumer are the same images as the native pair's."""
    env = compose_env({})
    result = subprocess.run(
        ["docker", "compose", "--env-file", os.devnull, "-f", str(COMPOSE_FILE),
         "-p", "exactsum-e2e-build", "build", "producer", "consumer", "dashboard",
         "rq-dashboard"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        pytest.fail(
            "building the images failed (a host that cannot pull images needs "
            f"`make images-offline` first):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}",
            pytrace=False,
        )
    return {
        "producer": f"exactsum/producer:{IMAGE_TAG}",
        "consumer": f"exactsum/consumer:{IMAGE_TAG}",
        "dashboard": f"exactsum/dashboard:{IMAGE_TAG}",
        "rq-dashboard": f"exactsum/rq-dashboard:{IMAGE_TAG}",
        "python": env.get("PYTHON_IMAGE", "python:3.12-slim"),
    }


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Keep each phase's report on the item, so a fixture can tell whether its test failed.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def make_stack(request: pytest.FixtureRequest, docker_client: Any,
               images: dict[str, str]) -> Iterator[Callable[[Mapping[str, str]], Stack]]:
    """``make_stack(settings)``: a compose project of this test's own with these settings.

    Torn down with ``down -v`` whatever happens; when the test failed, the services' last log
    lines are printed first, so that a CI failure can be read without rerunning it.
    """
    stacks: list[Stack] = []

    def make(settings: Mapping[str, str]) -> Stack:
        name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
        stack = Stack(docker_client, f"exactsum-e2e-{name}-{uuid.uuid4().hex[:6]}", settings)
        stacks.append(stack)
        return stack

    yield make
    failed = getattr(request.node, "report_call", None)
    # Every stack is taken down even if another one's teardown raises (ExitStack runs them all
    # and raises the first error after).
    with contextlib.ExitStack() as teardown:
        for stack in stacks:
            teardown.callback(_take_down, stack, failed is None or failed.failed)


def _take_down(stack: Stack, show_logs: bool) -> None:
    try:
        if show_logs:
            try:
                print(f"\n===== logs of {stack.project} =====\n{stack.logs()}")
            except subprocess.TimeoutExpired:
                print(f"\n===== logs of {stack.project}: `compose logs` timed out =====")
        stack.down()
    except BaseException:
        # pytest-timeout counts the teardown in the test's time: a test that failed late can be
        # interrupted here, mid-`down`. Its alarm goes off once, so a second pass runs to the
        # end and leaves nothing behind; the interruption is still raised.
        stack.down()
        raise
