"""The experiments of the full and the quick suite, and the medians over their repetitions."""

from __future__ import annotations

import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import ours, redis_bench

Runner = Callable[[Path, str], dict[str, Any]]


@dataclass
class Experiment:
    group: str  # batch, scaling, work, latency, memory, competitors, redis, shards
    name: str
    params: dict[str, Any]
    runner: Runner
    reps: int
    runs: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        rates = [r["items_per_s"] for r in self.runs if r.get("items_per_s") is not None]
        out: dict[str, Any] = {
            "group": self.group, "name": self.name, "params": self.params,
            "label": next((r["label"] for r in self.runs if "label" in r), self.name),
            "reps": len(self.runs),
            "items": next((r["items"] for r in self.runs if r.get("items")), None),
            "exact": bool(self.runs) and all(r.get("exact") for r in self.runs),
            "items_per_s": statistics.median(rates) if rates else None,
            "items_per_s_min": min(rates) if rates else None,
            "items_per_s_max": max(rates) if rates else None,
            "errors": [r["error"] for r in self.runs if r.get("error")],
            "load_1min": [r["load_1min"] for r in self.runs if "load_1min" in r],
        }
        p99s = [r["latency"]["p99_ms"] for r in self.runs
                if r.get("latency", {}).get("p99_ms") is not None]
        if p99s and self.group == "latency":
            for key in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"):
                out[f"latency_{key}"] = statistics.median(r["latency"][key] for r in self.runs)
            out["latency_p99_ms_runs"] = p99s
        cpus = [r["cpu_s"] for r in self.runs if "cpu_s" in r and r.get("items")]
        if cpus:
            out["cpu_s_per_million_items"] = {
                part: round(statistics.median(c[part] / r["items"] * 1e6
                                              for c, r in zip(cpus, self.runs, strict=False)
                                              if part in c), 2)
                for part in cpus[0]
            }
        if self.group == "redis":
            for key in ("lpush_per_s", "rpop_per_s"):
                out[key] = statistics.median(r[key] for r in self.runs if key in r)
        if self.group == "memory":
            out["rss"] = rss_summary(self.runs[0].get("rss_samples", []))
            out["rss_samples"] = self.runs[0].get("rss_samples", [])
        out["redis_commands"] = self.runs[0].get("redis_commands", []) if self.runs else []
        return out


def rss_summary(samples: list[tuple[float, dict[str, float]]]) -> dict[str, Any]:
    """Per process: RSS early in the run, at its peak and at the end, in MiB.

    "Early" is the first sample at least a fifth of the run in (and 1 s, past the imports), when
    the pipeline is at full speed: growth from there to the end is what the run itself costs.
    """
    names = sorted({name for _, row in samples for name in row})
    end_t = samples[-1][0] if samples else 0.0
    out = {}
    for name in names:
        timed = [(t, row[name]) for t, row in samples if name in row]
        series = [rss for _, rss in timed]
        if not series:
            continue
        early = next((rss for t, rss in timed if t >= max(1.0, end_t / 5)), series[-1])
        out[name] = {"early_mb": round(early, 1), "peak_mb": round(max(series), 1),
                     "end_mb": round(series[-1], 1), "growth_mb": round(series[-1] - early, 1),
                     "samples": len(series)}
    return out


def _ours(cfg: ours.OursConfig) -> Runner:
    return lambda workdir, fsync: ours.run(cfg, workdir, fsync=fsync)


def _competitor(name: str, count: int, **kwargs: Any) -> Runner:
    """A competitor's run; its module (and library) is imported only when it runs, so the quick
    suite needs no more than rq, and the full suite says which library is missing."""

    def runner(workdir: Path, fsync: str) -> dict[str, Any]:
        module = importlib.import_module(f"bench.competitors.{name}")
        result: dict[str, Any] = module.run(count, workdir, fsync=fsync, **kwargs)
        return result

    return runner


def _redis_bench(requests: int, pipeline: int) -> Runner:
    return lambda workdir, fsync: redis_bench.run(requests, pipeline, fsync=fsync)


def _scaled(items: int, scale: float, floor: int = 100) -> int:
    return max(floor, int(items * scale))


def quick(scale: float = 1.0, reps: int = 3) -> list[Experiment]:
    s = scale
    return [
        Experiment("batch", "ours-batched", {"batch": 1000, "consumers": 2, "threads": 4},
                   _ours(ours.OursConfig(1000, 2, 4, _scaled(3_000_000, s, 2000))), reps),
        Experiment("batch", "ours-unbatched", {"batch": 1, "consumers": 2, "threads": 4},
                   _ours(ours.OursConfig(1, 2, 4, _scaled(100_000, s))), reps),
        Experiment("latency", "latency-10k-batch1",
                   {"batch": 1, "rate": 10_000, "consumers": 2, "threads": 4},
                   _ours(ours.OursConfig(1, 2, 4, _scaled(30_000, s), rate=10_000)), reps),
        Experiment("competitors", "rq-simple", {"worker": "SimpleWorker", "processes": 2},
                   _competitor("rq_job", _scaled(600, s, 20), simple=True), reps),
        *_transports((1000,), {1000: _scaled(300_000, s, 2000)}, reps),
    ]


def _transports(batches: tuple[int, ...], items: dict[int, int],
                reps: int) -> list[Experiment]:
    """The same run over each transport, one beside the other: 2 consumers x 4 workers (threads
    for the native transport, RQ worker processes for RQ). The RQ runs have fewer items: each
    is timed on its own, so the figure is a rate either way."""
    exps = []
    for batch in batches:
        for transport, share in (("native", 1), ("rq", 10)):
            count = max(items[batch] // share, batch * 20)
            exps.append(Experiment(
                "transport", f"transport-{transport}-batch{batch}",
                {"transport": transport, "batch": batch, "consumers": 2, "workers": 4},
                _ours(ours.OursConfig(batch, 2, 4, count, transport=transport)), reps))
    return exps


def shards(scale: float = 1.0, reps: int = 3) -> list[Experiment]:
    """One run sharded over a local Redis Cluster of 1, 2 and 3 primaries, beside one plain
    Redis, at two batch sizes: small batches make Redis the busy part, large ones Python.
    3 consumers x 4 threads, partitions two per primary; one more row with a replica per
    primary and every write WAITed for by it (--min-replicas 1)."""
    exps = []
    for batch, items in ((10, _scaled(300_000, scale, 2000)),
                         (1000, _scaled(3_000_000, scale, 20_000))):
        for primaries, replicas in ((0, 0), (1, 0), (2, 0), (3, 0), (3, 1)):
            name = (f"shards-batch{batch}-single" if not primaries
                    else f"shards-batch{batch}-p{primaries}" + ("-r1" if replicas else ""))
            cfg = ours.OursConfig(batch, 3, 4, items, primaries=primaries, replicas=replicas,
                                  min_replicas=replicas)
            exps.append(Experiment(
                "shards", name, {"batch": batch, "primaries": primaries, "replicas": replicas,
                                 "consumers": 3, "threads": 4}, _ours(cfg), reps))
    return exps


def full(scale: float = 1.0, reps: int = 3) -> list[Experiment]:
    s = scale
    exps: list[Experiment] = []
    if redis_bench.available():
        for pipeline, requests in ((1, 200_000), (64, 2_000_000)):
            n = _scaled(requests, s, 1000)
            exps.append(Experiment(
                "redis", f"redis-benchmark-P{pipeline}",
                {"pipeline": pipeline, "clients": 50}, _redis_bench(n, pipeline), reps))
    batch_items = {1: 300_000, 10: 1_000_000, 100: 3_000_000, 1000: 5_000_000,
                   10_000: 5_000_000}
    for batch, items in batch_items.items():
        exps.append(Experiment("batch", f"ours-batch{batch}",
                               {"batch": batch, "consumers": 2, "threads": 4},
                               _ours(ours.OursConfig(batch, 2, 4, _scaled(items, s))), reps))
    for batch, items in ((1, 100_000), (1000, 3_000_000)):
        for consumers in (1, 2, 4):
            for threads in (1, 4, 16):
                exps.append(Experiment(
                    "scaling", f"ours-batch{batch}-c{consumers}-t{threads}",
                    {"batch": batch, "consumers": consumers, "threads": threads},
                    _ours(ours.OursConfig(batch, consumers, threads, _scaled(items, s))), reps))
    # Per-item work, claimed 10 items at a time (--max-claim 1) so that the work spreads over
    # every thread: threads against processes.
    for kind, work, items in (("cpu", {"work_cpu_us": 200.0}, 20_000),
                              ("io", {"work_io_ms": 0.5}, 10_000)):
        for mode, consumers, threads in (("threads", 1, 1), ("threads", 1, 4),
                                         ("threads", 1, 16), ("processes", 2, 1),
                                         ("processes", 4, 1)):
            cfg = ours.OursConfig(10, consumers, threads, _scaled(items, s), max_claim=1,
                                  **work)  # type: ignore[arg-type]
            exps.append(Experiment(
                "work", f"work-{kind}-{mode}-c{consumers}-t{threads}",
                {"work": kind, "mode": mode, "consumers": consumers, "threads": threads,
                 "workers": consumers * threads, **work}, _ours(cfg), reps))
    # The tail of the latency is the noisiest figure on a shared machine: more runs of it.
    latency_reps = max(reps, 5)
    for batch in (1, 10, 100):
        exps.append(Experiment(
            "latency", f"latency-10k-batch{batch}",
            {"batch": batch, "rate": 10_000, "consumers": 2, "threads": 4},
            _ours(ours.OursConfig(batch, 2, 4, _scaled(50_000, s), rate=10_000)),
            latency_reps))
    # The same paced run with the AOF fsynced once a second instead of at every write: how
    # much of the tail is the disk's (not the project's guarantee: see docs/benchmark.md).
    everysec = ours.OursConfig(10, 2, 4, _scaled(50_000, s), rate=10_000)
    exps.append(Experiment(
        "latency", "latency-10k-batch10-everysec",
        {"batch": 10, "rate": 10_000, "consumers": 2, "threads": 4, "fsync": "everysec"},
        lambda workdir, _fsync: ours.run(everysec, workdir, fsync="everysec"), latency_reps))
    for batch in (1000, 10):
        exps.append(Experiment(
            "memory", f"memory-10M-batch{batch}", {"batch": batch, "consumers": 2, "threads": 4},
            _ours(ours.OursConfig(batch, 2, 4, _scaled(10_000_000, s), sample_rss=True)), 1))
    exps += _transports((10, 100, 1000),
                        {10: _scaled(300_000, s, 200), 100: _scaled(1_000_000, s, 2000),
                         1000: _scaled(3_000_000, s, 20_000)}, reps)
    exps += [
        Experiment("competitors", "rq-simple", {"worker": "SimpleWorker", "processes": 2},
                   _competitor("rq_job", _scaled(1500, s, 20), simple=True), reps),
        # What batching by hand buys RQ: each job adds a list of 1000 numbers.
        Experiment("competitors", "rq-simple-1000-per-job",
                   {"worker": "SimpleWorker", "processes": 2, "numbers_per_job": 1000},
                   _competitor("rq_job", _scaled(300_000, s, 2000), simple=True,
                               per_job=1000), reps),
        Experiment("competitors", "rq-fork", {"worker": "Worker (fork per job)",
                                              "processes": 2},
                   _competitor("rq_job", _scaled(200, s, 10), simple=False), reps),
        Experiment("competitors", "dramatiq", {"processes": 2, "threads": 8},
                   _competitor("dramatiq_job", _scaled(6000, s, 20)), reps),
        Experiment("competitors", "celery", {"pool": "prefork", "concurrency": 2},
                   _competitor("celery_job", _scaled(3000, s, 20)), reps),
    ]
    exps += shards(s, reps)
    return exps


def run_all(exps: list[Experiment], workdir: Path, fsync: str) -> None:
    """Run each experiment's repetitions round-robin, so slow drift of the machine's load is
    spread over every experiment instead of landing on one."""
    most = max((e.reps for e in exps), default=0)
    total = sum(e.reps for e in exps)
    done = 0
    for rep in range(most):
        for exp in exps:
            if rep >= exp.reps:
                continue
            done += 1
            started = time.monotonic()
            load_1min = round(os.getloadavg()[0], 2)
            rundir = workdir / exp.name / f"run{rep}"
            try:
                result = exp.runner(rundir, fsync)
            except Exception as exc:  # a failed run is reported, never dropped
                result = {"kind": exp.name, "exact": False, "error": repr(exc)}
            result["wall_s"] = round(time.monotonic() - started, 2)
            result["load_1min"] = load_1min
            exp.runs.append(result)
            # Beside the run's logs (kept with --keep-logs): what it measured, so that a reader
            # (the smoke test) can check the figures against its own sums, not the verdict.
            rundir.mkdir(parents=True, exist_ok=True)
            (rundir / "result.json").write_text(json.dumps(result, default=str) + "\n")
            rate = result.get("items_per_s")
            shown = f"{rate:>12,.0f} items/s" if rate is not None else "      (no rate)"
            extra = ""
            if exp.group == "latency" and result.get("latency", {}).get("p99_ms") is not None:
                extra = f"  p99 {result['latency']['p99_ms']} ms"
            print(f"[{done}/{total}] {exp.name:<28} run {rep + 1}: {shown}  "
                  f"exact={result.get('exact')}{extra}  ({result['wall_s']} s)"
                  + (f"  ERROR {result['error'][:200]}" if result.get("error") else ""),
                  file=sys.stderr, flush=True)
