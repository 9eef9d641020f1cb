"""One measured run of this project: a fresh Redis, N consumer processes, one producer run.

The producer's JSON report is the verdict (its audit reads what the consumers' scripts wrote)
and its ``items_per_s`` is the figure: items over the time from the run's creation, through
every push, until the last item is committed. Consumers are started and registered before the
producer starts, as long-running services would be, and stopped with SIGTERM afterwards; each
writes its push-to-commit latency to a ``--stats-file``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import procs, server
from exactsum.keys import Keys
from exactsum.transport.latency import LatencyHistogram
from tests.launch import Launched, clean_env, launch


@dataclass(frozen=True)
class OursConfig:
    batch: int
    consumers: int
    threads: int
    items: int
    work_cpu_us: float = 0.0
    work_io_ms: float = 0.0
    rate: float = 0.0
    max_claim: int | None = None
    producer_threads: int = 2
    sample_rss: bool = False
    seed: int = 1
    # "rq": the same services over RQ (--transport rq); threads are then RQ worker processes.
    transport: str = "native"
    # > 0: a local Redis Cluster of this many primaries (each with ``replicas`` replicas and
    # writes WAITed for by ``min_replicas``) instead of one Redis; the run is sharded over it.
    primaries: int = 0
    replicas: int = 0
    min_replicas: int = 0

    def label(self) -> str:
        pool = "RQ worker processes" if self.transport == "rq" else "threads"
        text = f"batch {self.batch}, {self.consumers} consumers x {self.threads} {pool}"
        if self.work_cpu_us:
            text += f", {self.work_cpu_us:g} us CPU/item"
        if self.work_io_ms:
            text += f", {self.work_io_ms:g} ms I/O/item"
        if self.rate:
            text += f", paced at {self.rate:,.0f} items/s"
        if self.primaries:
            text += (f", Redis Cluster of {self.primaries} primaries"
                     + (f" x {self.replicas} replica, WAIT {self.min_replicas}"
                        if self.replicas else ""))
        return text


def run(cfg: OursConfig, workdir: Path, fsync: str = server.DEFAULT_FSYNC,
        timeout: float = 300.0, profile: bool = False) -> dict[str, Any]:
    """One run; with ``profile``, py-spy samples the producer and the first consumer into
    ``workdir/*.pyspy.txt`` (collapsed stacks; see bench/profile.py)."""
    workdir.mkdir(parents=True, exist_ok=True)
    label = cfg.label() + ("" if fsync == server.DEFAULT_FSYNC else f", appendfsync {fsync}")
    result: dict[str, Any] = {"kind": "ours", "config": asdict(cfg), "label": label,
                              "fsync": fsync}
    redis_server = (server.start_cluster(cfg.primaries, cfg.replicas, fsync) if cfg.primaries
                    else server.start(fsync))
    consumers: list[Launched] = []
    producer: Launched | None = None
    try:
        env = clean_env(REDIS_URL=redis_server.url, LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
        if cfg.primaries:
            env.update(REDIS_CLUSTER="1", MIN_REPLICAS=str(cfg.min_replicas))
        client = server.client_of(redis_server)
        stats_files = [workdir / f"consumer{i}.stats.json" for i in range(cfg.consumers)]
        for i, stats in enumerate(stats_files):
            args = ["--threads", str(cfg.threads), "--block-timeout", "0.2", "--stats-file",
                    str(stats)]
            if cfg.work_cpu_us:
                args += ["--work-cpu-us", str(cfg.work_cpu_us)]
            if cfg.work_io_ms:
                args += ["--work-io-ms", str(cfg.work_io_ms)]
            if cfg.max_claim is not None:
                args += ["--max-claim", str(cfg.max_claim)]
            args += ["--transport", cfg.transport]
            consumers.append(launch(f"consumer{i}", "consumer_service", args, env, workdir,
                                    stdout=False))
        _wait_registered(client, cfg.consumers, consumers)
        if cfg.transport == "rq":
            _wait_rq_workers(client, cfg.consumers * cfg.threads, consumers)
        spies = [_py_spy(consumers[0], workdir, env)] if profile else []
        cpu_redis_before = server.cpu_seconds_of(redis_server)
        producer_args = ["--json", "--count", str(cfg.items), "--batch", str(cfg.batch),
                         "--seed", str(cfg.seed), "--threads", str(cfg.producer_threads),
                         "--timeout", str(timeout), "--progress-interval", "60",
                         "--transport", cfg.transport]
        if cfg.rate:
            producer_args += ["--rate", str(cfg.rate)]
        producer = launch("producer", "producer_service", producer_args, env, workdir)
        if profile:
            spies.append(_py_spy(producer, workdir, env))
        sampler = None
        if cfg.sample_rss:
            pids = {"producer": producer.pid} | {c.name: c.pid for c in consumers}
            sampler = procs.RssSampler(pids, interval=0.1)
            sampler.start()
        cpu_producer = 0.0
        while producer.alive():
            cpu_producer = procs.cpu_seconds(producer.pid) or cpu_producer
            time.sleep(0.05)
        status = producer.wait(timeout=timeout + 60)
        if sampler is not None:
            result["rss_samples"] = sampler.finish()
        report = producer.report()
        result["cpu_s"] = {
            "producer": round(cpu_producer, 3),
            "consumers": round(sum(procs.cpu_seconds(c.pid) or 0.0 for c in consumers), 3),
            "redis": round(server.cpu_seconds_of(redis_server) - cpu_redis_before, 3),
        }
        result["redis_commands"] = server.command_stats(server.first_node(redis_server))
        for consumer in consumers:
            consumer.stop(timeout=20)
        for spy in spies:
            spy.wait(timeout=30)
        latency = LatencyHistogram.merged(
            LatencyHistogram.from_summary(json.loads(path.read_text())["latency"])
            for path in stats_files if path.exists()
        )
        result["latency"] = {k: v for k, v in latency.summary().items() if k != "buckets"}
        if report is None:
            result.update(exact=False, error=f"producer exit {status}, no report: "
                          f"{producer.stderr[-2000:]}")
            return result
        result.update(
            exact=bool(report["exact"]) and status == 0,
            items=report["produced"],
            elapsed_s=report["elapsed_s"],
            items_per_s=report["items_per_s"],
            report={k: report[k] for k in ("produced", "committed", "sum", "expected_sum",
                                            "lost", "duplicated", "dead_lettered", "exact",
                                            "stale_commits")},
        )
        if status != 0:
            result["error"] = f"producer exit {status}: {producer.stderr[-2000:]}"
        return result
    finally:
        for proc in [*consumers, *([producer] if producer else [])]:
            proc.stop(timeout=5)
        redis_server.close()


def _py_spy(target: Launched, workdir: Path, env: dict[str, str]) -> procs.Proc:
    """py-spy (the bench extra) recording ``target`` until it exits."""
    return procs.Proc(f"{target.name}-py-spy",
                      [procs.tool("py-spy") or "py-spy", "record", "--format", "raw",
                       "--rate", "250", "--gil", "--pid", str(target.pid), "--output",
                       str(workdir / f"{target.name}.pyspy.txt")], env, workdir)


def _wait_rq_workers(client: Any, count: int, consumers: list[Launched]) -> None:
    """RQ workers start after their consumer service registers: wait for all of them too."""
    _wait_registered(client, count, consumers, size=lambda: int(client.scard("rq:workers")))


def _wait_registered(client: Any, count: int, consumers: list[Launched],
                     size: Any = None) -> None:
    deadline = time.monotonic() + 30
    key = Keys().consumers
    while int(size() if size else client.zcard(key)) < count:
        for consumer in consumers:
            if not consumer.alive():
                raise RuntimeError(f"{consumer.name} exited: {consumer.stderr[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError("consumers did not register within 30 s")
        time.sleep(0.02)

