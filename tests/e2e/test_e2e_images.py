"""The Dockerfiles (producer, consumer, dashboard), built with the classic builder (the docker
SDK's build API) as hosts without BuildKit or buildx build them; compose, in the session
fixture, builds them with BuildKit."""

from __future__ import annotations

from typing import Any

import pytest

from .stack import ROOT

pytestmark = pytest.mark.e2e
DOCKERFILES = {"dashboard": "observe/Dockerfile"}


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("service", "entrypoint", "cmd"),
    [
        ("producer", ["python", "-m", "producer_service"], None),
        ("consumer", None, ["python", "-m", "consumer_service"]),
        ("dashboard", None, ["python", "-m", "observe.dashboard"]),
    ],
    ids=["producer", "consumer", "dashboard"],
)
def test_image_builds_with_the_classic_builder(docker_client: Any, images: dict[str, str],
                                               service: str, entrypoint: list[str] | None,
                                               cmd: list[str] | None) -> None:
    image, _ = docker_client.images.build(
        path=str(ROOT), dockerfile=DOCKERFILES.get(service, f"{service}_service/Dockerfile"),
        buildargs={"PYTHON_IMAGE": images["python"]}, tag=f"exactsum/{service}:e2e-classic",
        rm=True, forcerm=True, pull=False,
    )
    config = image.attrs["Config"]
    assert config["User"] not in ("", "0", "root"), "the image runs as root"
    assert "PYTHONUNBUFFERED=1" in config["Env"]
    # Exec form: no shell between Docker and Python, so SIGTERM reaches Python.
    assert config["Entrypoint"] == entrypoint
    if cmd is not None:
        assert config["Cmd"] == cmd
    if service == "consumer":
        assert config["Healthcheck"]["Test"][:1] == ["CMD"]
        assert "CONSUMER_ID_FILE=/tmp/consumer-id" in config["Env"]
    if service == "dashboard":
        assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "observe.healthcheck"]
        assert "DASHBOARD_HOST=0.0.0.0" in config["Env"]

    # The installed package runs as the image's user, and only the package went in.
    command = None if service == "producer" else cmd
    out = docker_client.containers.run(
        image.id, [*(command or []), "--help"], remove=True, network_disabled=True
    ).decode()
    assert "[env: REDIS_URL]" in out
    # The build's copy of the sources is gone; the code runs from site-packages.
    where = docker_client.containers.run(
        image.id, ["-c", "import os, exactsum; print(os.path.exists('/src'), exactsum.__file__)"],
        entrypoint=["python"], remove=True, network_disabled=True,
    ).decode().split()
    assert where[0] == "False", where
    assert "-packages/exactsum/" in where[1], where
