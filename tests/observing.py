"""Helpers for the tests of metrics, status and the dashboard."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.procs import Services


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample a /metrics endpoint serves, keyed by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items()
               if sample == name and wanted <= have)


def status_json(services: Services, *args: str, **env: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "observe.status", "--json", *args],
                          capture_output=True, text=True, timeout=30, env=services.env(**env))
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))
