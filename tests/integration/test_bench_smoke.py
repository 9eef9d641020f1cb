"""The quick benchmark end to end with tiny sizes, so that it cannot rot (not a timed test)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"ours_batched_items_per_s", "ours_unbatched_items_per_s", "rq_items_per_s",
        "ratio_batched_vs_rq", "ratio_unbatched_vs_rq", "p99_latency_ms",
        "native_transport_items_per_s", "rq_transport_items_per_s",
        "ratio_native_vs_rq_transport", "exact"}


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_bench_quick_with_tiny_sizes_prints_an_exact_json_line(tmp_path: Path) -> None:
    pytest.importorskip("rq")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "quick", "--scale", "0.01", "--reps", "1",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=80, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(line) >= KEYS, line
    assert line["exact"] is True, line
    for key in KEYS - {"exact"}:
        assert isinstance(line[key], int | float) and line[key] > 0, (key, line)
    assert (tmp_path / "benchmark.json").exists() and (tmp_path / "benchmark.md").exists()
