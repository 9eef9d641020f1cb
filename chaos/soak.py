"""``python -m chaos.soak``: a burst and a soak, watching the processes' memory.

Three steps on one throwaway redis-server (loopback only):

1. **Push capacity.** The producer alone pushes ``--probe-items`` into an unbounded queue; the
   time until the queue holds all of them is its push rate P (the keys are deleted after).
2. **Burst.** Consumers slowed (``--work-io-ms``) to about P/10 items/s take ``--burst-items``
   while the producer offers P: the queue must stay at the ``--max-queue`` bound, the producer
   must wait (backpressure), and the consumers' memory must not grow (one claim per thread).
3. **Soak.** ``--items`` (50,000,000) through consumers at full speed. The RSS of the producer
   and of every consumer is sampled from /proc all along and reported at 10 %, 50 % and 100 %.

Redis' ``used_memory`` is read before anything, at the peak, and after both runs' keys expired
(the producer sets ``--retention``; the consumers are stopped first so that their heartbeats
are withdrawn). Exit status 0 when both runs are exact and every bound below holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.launch import Launched, clean_env, launch
from tests.localredis import LocalRedis

log = logging.getLogger("soak")

PREFIX = "soak"
VALUES = ["--min", "-1000", "--max", "1000000"]  # the same for the probe and the runs


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def used_memory(client: redis.Redis) -> int:
    info = client.info("memory")
    return int(info["used_memory"])


@dataclass
class Sample:
    at: float
    committed: int
    queue: int
    rss: dict[str, int]
    used_memory: int


@dataclass
class Watch:
    """Samples of one run: RSS of each process, progress, queue depth, Redis memory."""

    samples: list[Sample] = field(default_factory=list)

    def at_progress(self, fraction: float, total: int) -> Sample:
        for sample in self.samples:
            if sample.committed >= fraction * total:
                return sample
        return self.samples[-1]


def watch(client: redis.Redis, procs: dict[str, Launched], run_id: str,
          producer: Launched, interval: float) -> Watch:
    out = Watch()
    committed_key = f"{PREFIX}:run:{run_id}:committed"
    while True:
        done = not producer.alive()
        rss = {name: r for name, p in procs.items() if (r := rss_kib(p.pid)) is not None}
        try:
            pipe = client.pipeline(transaction=False)
            pipe.get(committed_key)
            pipe.llen(f"{PREFIX}:queue")
            committed, depth = pipe.execute()
            out.samples.append(Sample(time.monotonic(), int(committed or 0), int(depth), rss,
                                      used_memory(client)))
        except redis.RedisError as exc:
            log.warning("sample failed: %s", exc)
        if done:
            return out
        time.sleep(interval)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.server = LocalRedis(data_dir=workdir / "redis", fsync=args.fsync)
        (workdir / "redis").mkdir()
        self.procs: list[Launched] = []
        self.failures: list[str] = []
        self.figures: dict[str, Any] = {}

    def start(self, name: str, module: str, args: list[str], prefix: str = PREFIX) -> Launched:
        env = clean_env(REDIS_URL=self.server.url, KEY_PREFIX=prefix, LOG_LEVEL="WARNING")
        process = launch(name, module, args, env, self.workdir)
        self.procs.append(process)
        return process

    def stop(self, procs: Sequence[Launched]) -> list[int | None]:
        """SIGTERM to all, then their statuses (None: killed after 20 s)."""
        for p in procs:
            p.signal(signal.SIGTERM)
        statuses: list[int | None] = []
        for p in procs:
            try:
                statuses.append(p.wait(timeout=20))
            except subprocess.TimeoutExpired:
                p.kill()
                statuses.append(None)
        return statuses

    # -- the steps -------------------------------------------------------------------------

    def push_capacity(self, client: redis.Redis) -> float:
        a = self.args
        producer = self.start("probe-producer", "producer_service", [
            "--json", "--count", str(a.probe_items), "--batch", str(a.batch), "--max-queue",
            "0", "--timeout", "600", "--seed", "1", *VALUES, "--progress-interval", "60"],
            prefix="probe")
        elements = -(-a.probe_items // a.batch)
        first = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            depth = int(client.llen("probe:queue"))
            if depth and first is None:
                first = (time.monotonic(), depth)
            if depth >= elements:
                break
            time.sleep(0.005)
        end = time.monotonic()
        self.stop([producer])
        for key in client.scan_iter(match="probe:*", count=1000):
            client.unlink(key)
        if first is None or end <= first[0]:
            raise RuntimeError("the push probe saw no pushes")
        return float((elements - first[1]) * a.batch / (end - first[0]))

    def run_phase(self, client: redis.Redis, name: str, items: int, consumers: int,
                  consumer_args: list[str], *, keep_serving: bool = False,
                  ) -> tuple[Watch, dict[str, Any], float, list[Launched]]:
        """One producer run. The consumers stay up until they have given the run's keys their
        retention time (consumers expire the keys they write once the run is finished), or,
        with ``keep_serving``, until the caller stops them."""
        a = self.args
        cons = {f"consumer{i}": self.start(f"{name}-consumer{i}", "consumer_service",
                                           ["--threads", str(a.threads), *consumer_args])
                for i in range(consumers)}
        time.sleep(1.0)
        run_id = f"{name}-{int(time.time())}"
        started = time.monotonic()
        producer = self.start(f"{name}-producer", "producer_service", [
            "--json", "--count", str(items), "--batch", str(a.batch), "--max-queue",
            str(a.max_queue), "--run-id", run_id, "--seed", "7", *VALUES, "--timeout",
            str(a.timeout), "--retention", str(a.retention), "--progress-interval", "30"])
        observed = watch(client, {"producer": producer, **cons}, run_id, producer, a.interval)
        elapsed = time.monotonic() - started
        report = producer.report() or {}
        if producer.popen.returncode != 0 or not report.get("exact"):
            self.failures.append(f"{name}: producer exited {producer.popen.returncode}: "
                                 f"{report.get('verdict')}")
        if not keep_serving:
            sum_key = f"{PREFIX}:run:{run_id}:sum"
            deadline = time.monotonic() + 60
            while int(client.ttl(sum_key)) < 0 and time.monotonic() < deadline:
                time.sleep(0.5)
            self.stop_consumers(name, list(cons.values()))
        return observed, report, elapsed, list(cons.values())

    def stop_consumers(self, name: str, procs: list[Launched]) -> None:
        statuses = self.stop(procs)
        if any(s != 0 for s in statuses):
            self.failures.append(f"{name}: consumer exit statuses {statuses}")

    def execute(self) -> None:
        a = self.args
        self.server.start()
        client = redis.Redis(host="127.0.0.1", port=self.server.port, socket_timeout=10)
        baseline = used_memory(client)
        self.figures["redis_baseline"] = baseline
        push_rate = self.push_capacity(client)
        self.figures["push_rate"] = push_rate
        log.info("producer alone pushes %.0f items/s", push_rate)

        # Burst: consumers at a tenth of the producer's rate, or slower.
        target = push_rate / 10
        work_io_ms = a.burst_consumers * a.threads * 1000 / target
        burst, _, burst_s, _ = self.run_phase(
            client, "burst", a.burst_items, a.burst_consumers,
            ["--work-io-ms", f"{work_io_ms:.4f}"])
        bound = max(1, a.max_queue // a.batch)
        deepest = max(s.queue for s in burst.samples)
        self.figures["burst"] = {
            "items": a.burst_items, "seconds": burst_s, "consumer_rate": a.burst_items / burst_s,
            "offered_over_consumed": push_rate / (a.burst_items / burst_s),
            "queue_bound": bound, "deepest_queue": deepest,
            "rss": rss_table(burst, a.burst_items),
        }
        if deepest > bound:
            self.failures.append(f"burst: the queue reached {deepest} elements, bound {bound}")
        if push_rate / (a.burst_items / burst_s) < 10:
            self.failures.append("burst: the offered rate was under 10x the consumers' rate")

        soak, soak_report, soak_s, serving = self.run_phase(
            client, "soak", a.items, a.consumers, [], keep_serving=True)
        self.figures["soak"] = {
            "items": a.items, "seconds": soak_s, "rate": a.items / soak_s,
            "deepest_queue": max(s.queue for s in soak.samples),
            "rss": rss_table(soak, a.items),
            "redis_peak": max(s.used_memory for s in soak.samples + burst.samples),
            "sum": soak_report.get("sum"), "expected_sum": soak_report.get("expected_sum"),
        }
        for name, row in self.figures["soak"]["rss"].items():
            growth = row["end"] - row["p10"]
            if growth > a.max_rss_growth_kib:
                self.failures.append(f"soak: {name} RSS grew {growth} KiB from 10% to the end")
        for name, row in self.figures["burst"]["rss"].items():
            growth = row["end"] - row["p10"]
            if growth > a.max_rss_growth_kib:
                self.failures.append(f"burst: {name} RSS grew {growth} KiB from 10% to the end")

        # Both runs' keys expire after the retention, while the soak's consumers keep serving
        # (they give finished runs' keys their expiry and forget runs whose keys are gone);
        # then the consumers leave, and Redis must be back at its baseline.
        waited_from = time.monotonic()
        deadline = waited_from + a.retention + 60
        while time.monotonic() < deadline:
            left = list(client.scan_iter(match=f"{PREFIX}:run*", count=1000))
            if not left:
                break
            time.sleep(0.5)
        self.figures["expired_after_s"] = time.monotonic() - waited_from
        self.stop_consumers("soak", serving)
        time.sleep(1.0)
        after = used_memory(client)
        keys_left = sorted(k.decode() for k in client.scan_iter(count=1000))
        self.figures["redis_after"] = after
        self.figures["keys_left"] = keys_left
        # Redis 7 keeps a latency histogram per command name once that command has run
        # (latency-tracking, on by default): a fixed cost of some 30 KB per command, not
        # data. CONFIG RESETSTAT frees them; what is left then is what the runs left behind.
        client.config_resetstat()
        time.sleep(0.2)
        after_reset = used_memory(client)
        self.figures["redis_after_resetstat"] = after_reset
        if any(k.startswith(f"{PREFIX}:run") for k in keys_left):
            self.failures.append("run keys still there after the retention")
        if after_reset - baseline > a.max_redis_growth:
            self.failures.append(f"Redis used_memory {after_reset} (after CONFIG RESETSTAT) is "
                                 f"{after_reset - baseline} bytes above its baseline {baseline}")

    def close(self) -> None:
        for p in self.procs:
            if p.alive():
                p.kill()
        self.server.stop()


def rss_table(w: Watch, total: int) -> dict[str, dict[str, int]]:
    """RSS (KiB) of each process at the first sample after the first commit, at 10 %, 50 %
    and 100 % of the run, and its maximum."""
    p10, p50 = w.at_progress(0.10, total), w.at_progress(0.50, total)
    end = w.samples[-2] if len(w.samples) > 1 else w.samples[-1]  # before the producer exits
    names = sorted(end.rss)
    first = next((s for s in w.samples if s.committed > 0), w.samples[0])  # under way
    points = {"first": first, "p10": p10, "p50": p50, "end": end}
    return {n: {**{k: s.rss.get(n, 0) for k, s in points.items()},
                "max": max(s.rss.get(n, 0) for s in w.samples)} for n in names}


def render(figures: dict[str, Any], failures: list[str]) -> str:
    mib = 1024

    def rss_rows(table: dict[str, dict[str, int]]) -> list[str]:
        columns = ("first", "p10", "p50", "end", "max")
        return [f"| {name} | " + " | ".join(f"{r[c] / mib:.1f}" for c in columns) + " |"
                for name, r in table.items()]

    b, s = figures["burst"], figures["soak"]
    lines = [
        f"Producer alone: {figures['push_rate']:,.0f} items/s pushed.",
        "",
        f"Burst: {b['items']:,} items in {b['seconds']:.1f} s; consumers took "
        f"{b['consumer_rate']:,.0f} items/s, the producer offered "
        f"{b['offered_over_consumed']:.1f}x that; deepest queue {b['deepest_queue']} "
        f"elements (bound {b['queue_bound']}).",
        "",
        "| burst: RSS MiB | first commit | at 10 % | at 50 % | at the end | max |",
        "|---|---:|---:|---:|---:|---:|",
        *rss_rows(b["rss"]),
        "",
        f"Soak: {s['items']:,} items in {s['seconds']:.1f} s ({s['rate']:,.0f} items/s); "
        f"sum {s['sum']} (expected {s['expected_sum']}); deepest queue {s['deepest_queue']}.",
        "",
        "| soak: RSS MiB | first commit | at 10 % | at 50 % | at the end | max |",
        "|---|---:|---:|---:|---:|---:|",
        *rss_rows(s["rss"]),
        "",
        "| Redis used_memory | bytes |",
        "|---|---:|",
        f"| before the runs | {figures['redis_baseline']:,} |",
        f"| peak during the runs | {s['redis_peak']:,} |",
        f"| after the run keys expired ({figures['expired_after_s']:.0f} s after the end) | "
        f"{figures['redis_after']:,} |",
        f"| the same after CONFIG RESETSTAT (frees the per-command latency histograms) | "
        f"{figures['redis_after_resetstat']:,} |",
        "",
        f"Keys left: {figures['keys_left'] or 'none'}",
        "",
        "verdict: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)),
    ]
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos.soak", description=__doc__.split("\n")[0]
                                if __doc__ else None)
    p.add_argument("--items", type=int, default=50_000_000,
                   help="items in the soak (the issue asks for at least 10,000,000)")
    p.add_argument("--burst-items", type=int, default=1_000_000, help="items in the burst")
    p.add_argument("--probe-items", type=int, default=1_000_000,
                   help="items pushed to measure the producer's rate")
    p.add_argument("--consumers", type=int, default=3, help="consumers in the soak")
    p.add_argument("--burst-consumers", type=int, default=2, help="consumers in the burst")
    p.add_argument("--threads", type=int, default=4, help="threads per consumer")
    p.add_argument("--batch", type=int, default=100, help="items per queue element")
    p.add_argument("--max-queue", type=int, default=100_000, help="the producer's queue bound")
    p.add_argument("--retention", type=int, default=10,
                   help="seconds the runs' keys are kept after they finish")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    p.add_argument("--timeout", type=float, default=1800, help="the producers' timeout")
    p.add_argument("--fsync", default="always", choices=["always", "everysec", "no"],
                   help="Redis appendfsync")
    p.add_argument("--max-rss-growth-kib", type=int, default=16 * 1024,
                   help="fail if a process' RSS grows more than this from 10%% to the end")
    p.add_argument("--max-redis-growth", type=int, default=256 * 1024,
                   help="fail if Redis used_memory ends more than this many bytes above its "
                   "baseline")
    p.add_argument("--json-out", default=None, help="also write the figures as JSON to FILE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s soak: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)  # so that `finally` stops what was started
    workdir = Path(tempfile.mkdtemp(prefix="exactsum-soak-"))
    soak = Soak(args, workdir)
    try:
        soak.execute()
    finally:
        soak.close()
    text = render(soak.figures, soak.failures)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**soak.figures,
                                                   "failures": soak.failures}) + "\n")
    print(f"soak: logs in {workdir}")
    return 0 if not soak.failures else 1


if __name__ == "__main__":
    sys.exit(main())
