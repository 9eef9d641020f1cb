"""The compose profile `rq`: the pair on --transport rq, run as the compose file's header says
(`up --exit-code-from rq-producer rq-producer`, so only the RQ services start), and rq-dashboard
showing RQ's queue and workers on the host's loopback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.procs import assert_exact, random_sum

from .stack import ROOT, Stack, wait_for

pytestmark = pytest.mark.e2e

RQ_SERVICES = ("redis", "rq-consumer", "rq-dashboard", "rq-producer")


def http_get(port: str, path: str) -> tuple[int, bytes] | None:
    """Status and body of a GET on the host's loopback; None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return None


def http_json(port: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200, (path, reply.status)
        return json.loads(reply.read())


@pytest.mark.timeout(300)
def test_rq_profile_sums_exactly_and_rq_dashboard_shows_the_queue(make_stack: Any) -> None:
    count, batch, replicas, seed = 50_000, 500, 2, 11
    stack: Stack = make_stack({"PRODUCER_COUNT": str(count), "PRODUCER_BATCH": str(batch),
                               "PRODUCER_SEED": str(seed),
                               "PRODUCER_JSON": "1", "CONSUMER_REPLICAS": str(replicas),
                               "RQ_DASHBOARD_HEALTH_INTERVAL": "1s"})
    port = stack.env["RQ_DASHBOARD_PORT"]

    # The header's command: naming rq-producer enables the profile and starts its dependencies
    # (Redis, the RQ consumers once healthy, rq-dashboard), and compose exits with its verdict.
    result = stack.compose("up", "--no-build", "--exit-code-from", "rq-producer", "rq-producer",
                           timeout=240, check=False)
    producer = stack.container("rq-producer")
    report = Stack.report(producer)
    assert result.returncode == 0, (result.returncode, report, result.stderr[-2000:])
    assert_exact(report, count, random_sum(count, seed))
    assert len(report["by_consumer"]) >= 2, report["by_consumer"]

    # Only the profile's services ran: the native pair and its dashboard stayed down, so the
    # sum above is the RQ pair's alone.
    services = {c.labels["com.docker.compose.service"] for c in stack.containers(None)}
    assert services == set(RQ_SERVICES), services
    assert len(stack.containers("rq-consumer")) == replicas
    for container in stack.containers("rq-consumer"):
        container.reload()
        assert container.attrs["Config"]["Image"].startswith("exactsum/consumer:")
        assert "TRANSPORT=rq" in container.attrs["Config"]["Env"], container.name
    # The dependencies keep serving after the run, as the header says.
    wait_for("rq-dashboard healthy", lambda: stack.healthy("rq-dashboard", 1), timeout=60)
    assert stack.healthy("rq-consumer", replicas)

    # rq-dashboard, from the host: on the loopback only, its page answers, and its JSON API
    # shows the queue the run went through and the RQ workers of both replicas serving it.
    dashboard = stack.container("rq-dashboard")
    bindings = dashboard.attrs["NetworkSettings"]["Ports"]["9181/tcp"]
    assert {(b["HostIp"], b["HostPort"]) for b in bindings} == {("127.0.0.1", port)}
    page = http_get(port, "/")
    assert page is not None and page[0] == 200, page
    assert b"RQ dashboard" in page[1]

    queues = {q["name"]: q for q in http_json(port, "/0/data/queues.json")["queues"]}
    assert "exactsum" in queues, queues
    assert queues["exactsum"]["count"] == 0, queues["exactsum"]  # every job was taken
    assert queues["exactsum"]["failed_job_registry_count"] == 0, queues["exactsum"]
    workers = http_json(port, "/0/data/workers.json")["workers"]
    serving = [w for w in workers if "exactsum" in w["queues"]]
    assert len(serving) >= replicas, workers
    # A job per batch, each done by one of them (at least once: a retried job counts again).
    assert sum(w["successful_job_count"] for w in serving) >= count // batch, workers
    assert http_get(port, "/0/view/jobs/exactsum/queued/8/asc/1") is not None

    # The browser cannot drop jobs: deletion is off (RQ_DASHBOARD_DISABLE_DELETE).
    assert http_json(port, "/queue/exactsum/queued/empty", method="POST") == {
        "status": "DISABLED"}

    # Another run against the consumers that are up, as the header says.
    again = stack.compose("run", "--rm", "--no-deps", "rq-producer", "--count", "5000",
                          "--seed", "9", "--json", timeout=180)
    assert_exact(Stack.report_from_text(again.stdout), 5_000, random_sum(5_000, 9))

    # A stop lets every RQ consumer finish within its grace and exit 0, as the native ones do.
    stack.compose("stop", "rq-consumer")
    for container in stack.containers("rq-consumer"):
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, (container.name,
                                                           container.attrs["State"])


@pytest.mark.timeout(400)
def test_rq_dashboard_image_builds_with_the_classic_builder(docker_client: Any,
                                                             images: dict[str, str]) -> None:
    """As the other Dockerfiles: no BuildKit-only syntax, an unprivileged user, exec form, and
    rq-dashboard importable with the six it does not declare."""
    image, _ = docker_client.images.build(
        path=str(ROOT), dockerfile="observe/rq-dashboard.Dockerfile",
        buildargs={"PYTHON_IMAGE": images["python"]}, tag="exactsum/rq-dashboard:e2e-classic",
        rm=True, forcerm=True, pull=False,
    )
    config = image.attrs["Config"]
    assert config["User"] not in ("", "0", "root"), "the image runs as root"
    assert config["Cmd"] == ["rq-dashboard"] and config["Entrypoint"] is None
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "python"]
    assert "RQ_DASHBOARD_DISABLE_DELETE=true" in config["Env"]
    assert "RQ_DASHBOARD_BIND=0.0.0.0" in config["Env"]
    out = docker_client.containers.run(
        image.id, ["python", "-c", "import rq, rq_dashboard.cli, exactsum; print(rq.__version__)"],
        remove=True, network_disabled=True,
    ).decode().strip()
    assert out.split(".")[0] == "3", out
