"""What a person sees: progress once a second (a bar on a terminal, log lines otherwise), and
`make run`'s verified report."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import Services, assert_exact, finish, numbers_file, random_sum

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_progress_lines_when_not_a_terminal(services: Services, tmp_path: Path) -> None:
    path, total = numbers_file(tmp_path, 3_000)
    services.consumer("--threads", "2", "--work-io-ms", "1")  # about 3 s of work
    producer = services.producer("--input", str(path), "--batch", "10", "--progress-interval",
                                 "0.5")
    report = finish(producer)
    lines = [line for line in producer.stderr.splitlines() if "produced 3000/3000" in line]
    assert len(lines) >= 2, producer.stderr
    assert "committed" in lines[-1] and "queue depth" in lines[-1] and "items/s" in lines[-1]
    assert_exact(report, 3_000, total)


@pytest.mark.timeout(60)
def test_progress_bar_on_a_terminal(services: Services, tmp_path: Path) -> None:
    path, total = numbers_file(tmp_path, 3_000)
    services.consumer("--threads", "2", "--work-io-ms", "1")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer_service", "--input", str(path), "--batch", "10",
         "--progress-interval", "0.5"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, env=services.env(),
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the producer is done
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    assert b"\r[" in seen and b"#" in seen and b"items/s" in seen, seen[-500:]
    text = proc.stdout.read()  # type: ignore[union-attr]
    assert b"verified exact" in text and f"the sum is        : {total}\n".encode() in text, text


@pytest.mark.timeout(90)
def test_make_run_prints_a_verified_report() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/run_local.py", "--count", "20000", "--seed", "4"], cwd=ROOT,
        capture_output=True, text=True, timeout=80,
        env={**os.environ, "CONSUMERS": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verified exact: every item counted exactly once" in result.stdout
    assert "items produced    : 20000" in result.stdout
    assert f"the sum is        : {random_sum(20000, 4)}\n" in result.stdout
    assert result.stdout.count("consumer ") == 2
