"""The Kubernetes manifests (deploy/k8s/), checked offline: no cluster runs here.

- Each object is read into the official client's model of its kind (required fields and
  types), and every key of the manifest must survive the round trip, so that a misspelt field,
  which the API server would drop or refuse, fails here too.
- The cross-references a cluster would only reveal at run time: selectors and labels, the
  service that Redis' URL names, ports, each environment variable and option being one that
  the services read (their own `--help`), the probe's module, the grace periods.
- The KEDA ScaledObject's fields against KEDA 2.x's documented specification (the CRD is not
  in the client), and the metric names its query uses against the metrics a consumer serves,
  scraped from a real one on a real Redis.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes import client as k8s
from prometheus_client import generate_latest

from exactsum.keys import Keys
from exactsum.metrics import ConsumerMetrics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"

MODELS: dict[tuple[str, str], type[Any]] = {
    ("v1", "Namespace"): k8s.V1Namespace,
    ("v1", "Service"): k8s.V1Service,
    ("apps/v1", "StatefulSet"): k8s.V1StatefulSet,
    ("apps/v1", "Deployment"): k8s.V1Deployment,
    ("batch/v1", "Job"): k8s.V1Job,
}

# KEDA 2.x ScaledObject specification (keda.sh/docs/2.15/reference/scaledobject-spec and the
# Prometheus scaler's page): the fields it documents at each level.
KEDA_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
             "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced",
             "triggers"}
KEDA_TARGET = {"apiVersion", "kind", "name", "envSourceContainerName"}
KEDA_ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig",
                 "scalingModifiers"}
KEDA_HPA_CONFIG = {"name", "behavior"}
KEDA_TRIGGER = {"type", "metadata", "name", "useCachedMetrics", "authenticationRef",
                "metricType"}
KEDA_PROMETHEUS = {"serverAddress", "query", "queryParameters", "threshold",
                   "activationThreshold", "namespace", "customHeaders", "ignoreNullValues",
                   "unsafeSsl", "authModes", "timeout"}


def load_all() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                found.append((path.name, doc))
    return found


DOCS = load_all()
OBJECTS = [(name, doc) for name, doc in DOCS if doc.get("kind") != "Kustomization"]
# Kubernetes' own kinds; the KEDA object is checked by test_keda_scaled_object_fields.
CORE = [(name, doc) for name, doc in OBJECTS if not doc["apiVersion"].startswith("keda.sh/")]


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in OBJECTS if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in objects(kind) if doc["metadata"].get("name") == name
             or doc["metadata"].get("generateName", "").startswith(name)]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(doc)["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def env_of(doc: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(doc).get("env", [])}


def lost_keys(original: Any, kept: Any, path: str = "") -> list[str]:
    """Keys of ``original`` that are not in ``kept`` (the model's own serialisation)."""
    if isinstance(original, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        lost = []
        for key, value in original.items():
            if key not in kept:
                lost.append(f"{path}.{key}")
            else:
                lost += lost_keys(value, kept[key], f"{path}.{key}")
        return lost
    if isinstance(original, list):
        if not isinstance(kept, list) or len(kept) != len(original):
            return [path]
        return [k for i, item in enumerate(original) for k in lost_keys(item, kept[i],
                                                                         f"{path}[{i}]")]
    return []


def help_names(module: str) -> tuple[set[str], str]:
    """The environment variables and the text of ``python -m MODULE --help``."""
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env={"COLUMNS": "400",
                                                                  "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # The options' variables, and those the help names in prose (REDIS_USERNAME, ...).
    names = set(re.findall(r"\[env:\s+([A-Z][A-Z0-9_]*)\]", text))
    names |= set(re.findall(r"\b(REDIS_[A-Z_]+)\b", text))
    return names, text


@pytest.mark.parametrize(("file", "doc"), CORE, ids=[f"{f}:{d['kind']}" for f, d in CORE])
def test_each_object_is_a_valid_model_of_its_kind(file: str, doc: dict[str, Any]) -> None:
    model = MODELS.get((doc["apiVersion"], doc["kind"]))
    assert model is not None, f"{file}: no model for {doc['apiVersion']} {doc['kind']}"
    obj = model.from_dict(doc)
    kept = obj.model_dump(by_alias=True, exclude_none=True)
    assert lost_keys(doc, kept) == [], f"{file}: fields {model.__name__} does not know"


def test_a_misspelt_field_is_caught() -> None:
    """The round trip is what catches typos: from_dict alone drops unknown keys."""
    doc = yaml.safe_load((K8S / "consumer.yaml").read_text(encoding="utf-8"))
    doc["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 20
    kept = k8s.V1Deployment.from_dict(doc).model_dump(by_alias=True, exclude_none=True)
    assert lost_keys(doc, kept) == [".spec.template.spec.terminationGracePeriodSecond"]


def test_kustomization_lists_the_stack_but_not_the_run() -> None:
    kustomization = next(doc for _, doc in DOCS if doc.get("kind") == "Kustomization")
    resources = set(kustomization["resources"])
    assert all((K8S / r).is_file() for r in resources), resources
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # Applying the stack must not start a producer run (a Job with generateName).
    assert resources == files - {"producer-job.yaml"}
    assert kustomization["namespace"] == one("Namespace", "exactsum")["metadata"]["name"]


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "Job"])
def test_selectors_match_their_pods(kind: str) -> None:
    for doc in objects(kind):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        selector = doc["spec"].get("selector", {}).get("matchLabels", {})
        assert selector.items() <= labels.items(), doc["metadata"]
        assert kind == "Job" or selector, f"{kind} without a selector"


def test_services_select_pods_and_ports_that_exist() -> None:
    workloads = objects("Deployment") + objects("StatefulSet")
    for service in objects("Service"):
        selector = service["spec"]["selector"]
        targets = [w for w in workloads
                   if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, service["metadata"]["name"]
        ports = {p["name"]: p["containerPort"] for p in container(targets[0])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    redis = one("StatefulSet", "redis")
    governing = one("Service", redis["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None", "a StatefulSet's service is headless"


def test_redis_keeps_every_acknowledged_write() -> None:
    redis = one("StatefulSet", "redis")
    args = container(redis)["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"
    mounts = {m["name"]: m["mountPath"] for m in container(redis)["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in redis["spec"]["volumeClaimTemplates"]}
    assert mounts["data"] == args[args.index("--dir") + 1]
    assert "data" in claims


@pytest.mark.parametrize(("kind", "name", "module"), [
    ("Deployment", "consumer", "consumer_service"),
    ("Job", "producer-run-", "producer_service"),
    ("Deployment", "dashboard", "observe.dashboard"),
])
def test_environment_and_options_are_ones_the_service_reads(kind: str, name: str,
                                                            module: str) -> None:
    doc = one(kind, name)
    names, text = help_names(module)
    unknown = set(env_of(doc)) - names
    assert not unknown, f"{kind} {name}: {sorted(unknown)} are not read by {module}"
    for arg in container(doc).get("args", []):
        if arg.startswith("--"):
            assert re.search(rf"\s{re.escape(arg)}\b", text), f"{module} has no option {arg}"


def test_services_find_redis_by_its_service() -> None:
    service = one("Service", "redis")
    port = service["spec"]["ports"][0]["port"]
    for doc in [one("Deployment", "consumer"), one("Deployment", "dashboard"),
                one("Job", "producer-run-")]:
        url = urlparse(env_of(doc)["REDIS_URL"])
        assert (url.hostname, url.port) == ("redis", port), doc["metadata"]


def test_consumer_probes_grace_and_metrics_port() -> None:
    consumer = one("Deployment", "consumer")
    spec, main, env = pod_spec(consumer), container(consumer), env_of(consumer)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = main[probe]["exec"]["command"]
        assert command[:2] == ["python", "-m"], command
        assert importlib.util.find_spec(command[2]) is not None, command
        assert command[2] == "consumer_service.healthcheck"
    # The health check reads the id the consumer wrote, from the same file.
    assert env["CONSUMER_ID_FILE"].startswith("/tmp/")
    assert any(m["mountPath"] == "/tmp" for m in main["volumeMounts"])
    # SIGKILL only after the consumer's own grace has run out.
    assert spec["terminationGracePeriodSeconds"] > float(env["CONSUMER_GRACE"])
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    annotations = consumer["spec"]["template"]["metadata"]["annotations"]
    assert ports["metrics"] == int(env["CONSUMER_METRICS_PORT"])
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    # The image's user (USER in the Dockerfile) is the one the pod runs as.
    dockerfile = (ROOT / "consumer_service" / "Dockerfile").read_text(encoding="utf-8")
    user = re.search(r"^USER (\d+)", dockerfile, re.MULTILINE)
    assert user and spec["securityContext"]["runAsUser"] == int(user.group(1))


def test_keda_scaled_object_fields() -> None:
    [scaled] = objects("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= KEDA_SPEC, set(spec) - KEDA_SPEC
    assert set(spec["scaleTargetRef"]) <= KEDA_TARGET
    assert set(spec.get("advanced", {})) <= KEDA_ADVANCED
    hpa = spec["advanced"]["horizontalPodAutoscalerConfig"]
    assert set(hpa) <= KEDA_HPA_CONFIG
    # The HPA behaviour is Kubernetes' own type: its model checks it.
    behavior = k8s.V2HorizontalPodAutoscalerBehavior.from_dict(hpa["behavior"])
    assert lost_keys(hpa["behavior"], behavior.model_dump(by_alias=True, exclude_none=True)) == []
    for count in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        assert isinstance(spec[count], int), count
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    for trigger in spec["triggers"]:
        assert set(trigger) <= KEDA_TRIGGER, set(trigger) - KEDA_TRIGGER
        assert trigger["type"] == "prometheus"
        assert trigger["metricType"] in ("AverageValue", "Value", "Utilization")
        metadata = trigger["metadata"]
        assert set(metadata) <= KEDA_PROMETHEUS, set(metadata) - KEDA_PROMETHEUS
        # KEDA's trigger metadata is a map of strings.
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert {"serverAddress", "query", "threshold"} <= set(metadata)
        float(metadata["threshold"])
    target = spec["scaleTargetRef"]
    deployment = one(target["kind"], target["name"])
    assert deployment["apiVersion"] == target["apiVersion"]


def test_keda_query_uses_metrics_a_consumer_serves(redis_url: str) -> None:
    """The query counts the queue and the work in flight, by names a real consumer's metrics
    endpoint serves (scraped here from ConsumerMetrics on a real Redis)."""
    [scaled] = objects("ScaledObject")
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    used = set(re.findall(r"\b(exactsum_[a-z_]+)\b", query))
    assert used == {"exactsum_queue_depth_batches", "exactsum_inflight_batches"}, used

    metrics = ConsumerMetrics("k8s-test", Keys("k8stest"), redis_url, threads=2)
    try:
        scraped = generate_latest(metrics.registry).decode()
    finally:
        metrics.close()
    served = {line.split("{")[0].split(" ")[0] for line in scraped.splitlines()
              if line and not line.startswith("#")}
    assert used <= served, used - served
    # Redis answered the scrape, so both gauges carry a value rather than an error.
    assert "exactsum_redis_up 1.0" in scraped
