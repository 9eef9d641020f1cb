"""The quick benchmark end to end with tiny sizes, so that it cannot rot (not a timed test).

Its verdict is not taken on trust: each run's figures are checked against sums this test
computes itself from the seed (docs/testing.md), from the producers' own reports and what the
competitor's run read back from its Redis, both kept beside the run's logs (``--keep-logs``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launch import parse_report
from tests.procs import assert_exact, random_sum

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"ours_batched_items_per_s", "ours_unbatched_items_per_s", "rq_items_per_s",
        "ratio_batched_vs_rq", "ratio_unbatched_vs_rq", "p99_latency_ms",
        "native_transport_items_per_s", "rq_transport_items_per_s",
        "ratio_native_vs_rq_transport", "exact"}
# The quick suite's runs at --scale 0.01 (bench/suite.py, quick: each size scaled, or its floor)
# and how many numbers each sums, all drawn for the producer's --seed 1 (bench.ours.OursConfig;
# the competitors get the same numbers): the test's own record, not the suite's.
SEED = 1
OURS_ITEMS = {"ours-batched": 30_000, "ours-unbatched": 1_000, "latency-10k-batch1": 300,
              "transport-native-batch1000": 20_000, "transport-rq-batch1000": 20_000}
RQ_JOBS = {"rq-simple": 20}


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_bench_quick_with_tiny_sizes_prints_an_exact_json_line(tmp_path: Path) -> None:
    pytest.importorskip("rq")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    out = tmp_path / "out"
    # TMPDIR: the kept logs (bench's own temporary directory) go where pytest cleans up.
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "quick", "--scale", "0.01", "--reps", "1",
         "--out", str(out), "--keep-logs"],
        cwd=ROOT, capture_output=True, text=True, timeout=80, check=False,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(line) >= KEYS, line
    assert line["exact"] is True, line
    for key in KEYS - {"exact"}:
        assert isinstance(line[key], int | float) and line[key] > 0, (key, line)
    assert (out / "benchmark.json").exists() and (out / "benchmark.md").exists()

    kept = re.search(r"^logs: (.+)$", proc.stderr, re.MULTILINE)
    assert kept, proc.stderr[-3000:]
    logs = Path(kept.group(1))
    runs = {path.name for path in logs.iterdir() if path.is_dir()}
    assert runs == set(OURS_ITEMS) | set(RQ_JOBS), runs
    for name, items in OURS_ITEMS.items():
        # The producer's own report of the run, as it printed it, against the seed's sum.
        report = parse_report((logs / name / "run0" / "producer.out").read_text())
        assert report is not None, name
        assert_exact(report, items, random_sum(items, SEED))
    for name, jobs in RQ_JOBS.items():
        # One job per number: the completions and the sum the jobs left in Redis.
        result = json.loads((logs / name / "run0" / "result.json").read_text())
        assert result["report"]["done"] == jobs, (name, result)
        assert result["report"]["sum"] == random_sum(jobs, SEED), (name, result)
