"""The work a consumer does on a batch besides counting it: a stand-in, for benchmarks and demos
(``--work-cpu-us``, ``--work-io-ms``), shared by every transport's worker."""

from __future__ import annotations

import time


def simulate_work(items: int, cpu_us: float, io_ms: float) -> None:
    """Spin ``cpu_us`` (holding the GIL) and sleep ``io_ms`` (releasing it) per item."""
    if cpu_us:
        end = time.perf_counter() + items * cpu_us / 1e6
        while time.perf_counter() < end:
            pass
    if io_ms:
        time.sleep(items * io_ms / 1000)
