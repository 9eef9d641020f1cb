"""The suite's outputs: a JSON file of every run, a Markdown table, and the quick JSON line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench import machine

# The targets for this project, end to end on this kind of machine.
TARGET_BATCHED = 1_000_000
TARGET_UNBATCHED = 30_000
TARGET_P99_MS = 5.0
FLAT_RSS_MB = 5.0  # growth over the run, after start-up, that still counts as flat


def by_name(summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in summaries}


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _spread(s: dict[str, Any]) -> str:
    if s.get("items_per_s") is None:
        return "-"
    text = _rate(s["items_per_s"])
    if s["reps"] > 1:
        text += f" ({_rate(s['items_per_s_min'])}-{_rate(s['items_per_s_max'])})"
    return text


def _exact(s: dict[str, Any]) -> str:
    return "yes" if s["exact"] else "**NO**"


def _cpu(s: dict[str, Any]) -> str:
    cpu = s.get("cpu_s_per_million_items")
    if not cpu:
        return "-"
    return " / ".join(f"{cpu[k]:g}" for k in ("producer", "consumers", "redis") if k in cpu)


def quick_line(summaries: list[dict[str, Any]], info: dict[str, Any],
               duration_s: float) -> dict[str, Any]:
    s = by_name(summaries)
    batched = s["ours-batched"]["items_per_s"]
    unbatched = s["ours-unbatched"]["items_per_s"]
    rq = s["rq-simple"]["items_per_s"]
    latency = s["latency-10k-batch1"]
    native_t = s["transport-native-batch1000"]["items_per_s"]
    rq_t = s["transport-rq-batch1000"]["items_per_s"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 1) if a and b else None

    return {
        "ours_batched_items_per_s": batched,
        "ours_unbatched_items_per_s": unbatched,
        "rq_items_per_s": rq,
        "ratio_batched_vs_rq": ratio(batched, rq),
        "ratio_unbatched_vs_rq": ratio(unbatched, rq),
        "p99_latency_ms": latency.get("latency_p99_ms"),
        "native_transport_items_per_s": native_t,
        "rq_transport_items_per_s": rq_t,
        "ratio_native_vs_rq_transport": ratio(native_t, rq_t),
        "latency_rate_items_per_s": latency.get("items_per_s"),
        "exact": all(x["exact"] for x in summaries),
        "reps": max(x["reps"] for x in summaries),
        "configs": {
            "batched": s["ours-batched"]["label"], "unbatched": s["ours-unbatched"]["label"],
            "rq": "RQ SimpleWorker, 2 worker processes, one job per number",
            "latency": latency["label"],
            "transports": s["transport-rq-batch1000"]["label"],
        },
        "machine": machine.one_line(info),
        "duration_s": round(duration_s, 1),
    }


def targets(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    s = by_name(summaries)
    rows: list[dict[str, Any]] = []
    batch = [x for x in summaries if x["group"] == "batch" and x["items_per_s"]]
    if batch:
        best = max(batch, key=lambda x: x["items_per_s"])
        rows.append({"target": f">= {TARGET_BATCHED:,} items/s with batching",
                     "measured": f"{_rate(best['items_per_s'])} items/s ({best['label']})",
                     "met": best["items_per_s"] >= TARGET_BATCHED and best["exact"]})
    one = s.get("ours-batch1") or s.get("ours-unbatched")
    if one:
        rows.append({"target": f">= {TARGET_UNBATCHED:,} items/s with --batch 1",
                     "measured": f"{_rate(one['items_per_s'])} items/s ({one['label']})",
                     "met": (one["items_per_s"] or 0) >= TARGET_UNBATCHED and one["exact"]})
    for name in ("latency-10k-batch1", "latency-10k-batch10", "latency-10k-batch100"):
        lat = s.get(name)
        if lat and lat.get("latency_p99_ms") is not None:
            rows.append({"target": f"p99 push-to-commit <= {TARGET_P99_MS:g} ms at 10,000 "
                                   f"items/s (batch {lat['params']['batch']})",
                         "measured": f"p99 {lat['latency_p99_ms']:g} ms (runs: "
                                     f"{', '.join(f'{v:g}' for v in lat['latency_p99_ms_runs'])}"
                                     f"; p50 {lat['latency_p50_ms']:g} ms) at "
                                     f"{_rate(lat['items_per_s'])} items/s",
                         "met": lat["latency_p99_ms"] <= TARGET_P99_MS and lat["exact"]})
    for mem in (x for x in summaries if x["group"] == "memory" and x.get("rss")):
        growth = max(v["growth_mb"] for v in mem["rss"].values())
        rows.append({"target": "producer and consumer RSS flat over 10,000,000 items "
                               f"(batch {mem['params']['batch']})",
                     "measured": "growth after start-up at most "
                                 f"{growth:g} MiB (" + ", ".join(
                                     f"{k} {v['early_mb']:g}->{v['end_mb']:g} MiB"
                                     for k, v in mem["rss"].items()) + ")",
                     "met": growth <= FLAT_RSS_MB and mem["exact"]})
    return rows


def markdown(summaries: list[dict[str, Any]], info: dict[str, Any], fsync: str,
             duration_s: float) -> str:
    s = by_name(summaries)
    out = [
        "# exactsum benchmark results",
        "",
        f"Machine: {machine.one_line(info)}. Redis: one fresh `redis-server` per run, "
        f"`appendonly yes`, `appendfsync {fsync}`, loopback. Each figure is the median of the "
        "runs (min-max in brackets); every run of every queue was checked exact (sum and count "
        f"of completions). Suite time: {duration_s / 60:.1f} min.",
        "",
    ]
    rows = targets(summaries)
    if rows:
        out += ["## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
    for row in rows:
        out.append(f"| {row['target']} | {row['measured']} | {'yes' if row['met'] else 'NO'} |")

    batch = [x for x in summaries if x["group"] == "batch"]
    if batch:
        out += ["", "## This project by batch size (1 producer, 2 consumers x 4 threads)", "",
                "| batch | items/s | exact | CPU s per million items: producer / consumers / "
                "redis |", "| ---: | ---: | --- | --- |"]
        for x in batch:
            out.append(f"| {x['params']['batch']} | {_spread(x)} | {_exact(x)} | {_cpu(x)} |")

    for batch_size in (1, 1000):
        rows = [x for x in summaries if x["group"] == "scaling"
                and x["params"]["batch"] == batch_size]
        if not rows:
            continue
        threads = sorted({x["params"]["threads"] for x in rows})
        out += ["", f"## Consumers x threads, batch {batch_size} (items/s)", "",
                "| consumers | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads)
                + " |",
                "| ---: | " + " | ".join("---:" for _ in threads) + " |"]
        for consumers in sorted({x["params"]["consumers"] for x in rows}):
            cells = []
            for t in threads:
                cell = next((x for x in rows if x["params"]["consumers"] == consumers
                             and x["params"]["threads"] == t), None)
                cells.append("-" if cell is None else
                             _rate(cell["items_per_s"]) + ("" if cell["exact"] else " NOT EXACT"))
            out.append(f"| {consumers} | " + " | ".join(cells) + " |")

    work = [x for x in summaries if x["group"] == "work"]
    if work:
        out += ["", "## Work per item: threads against processes (batch 10, claims of one "
                "element)", "",
                "| work per item | workers | items/s | exact |", "| --- | --- | ---: | --- |"]
        for x in work:
            p = x["params"]
            what = (f"{p['work_cpu_us']:g} us CPU" if p["work"] == "cpu"
                    else f"{p['work_io_ms']:g} ms I/O wait")
            who = f"{p['consumers']} process{'es' if p['consumers'] > 1 else ''} x " \
                  f"{p['threads']} thread{'s' if p['threads'] > 1 else ''}"
            out.append(f"| {what} | {who} | {_spread(x)} | {_exact(x)} |")

    latency = [x for x in summaries if x["group"] == "latency"]
    if latency:
        out += ["", "## Push-to-commit latency at a steady 10,000 items/s (2 consumers x 4 "
                "threads; ms, median of runs)", "",
                "| batch | achieved items/s | p50 | p90 | p99 | p99.9 | max | exact | load avg "
                "(1 min) at the runs |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for x in latency:
            fsync_note = f" (appendfsync {x['params']['fsync']})" if "fsync" in x["params"] else ""
            out.append(f"| {x['params']['batch']}{fsync_note} | {_rate(x['items_per_s'])} | "
                       f"{x.get('latency_p50_ms')} | {x.get('latency_p90_ms')} | "
                       f"{x.get('latency_p99_ms')} | {x.get('latency_p999_ms')} | "
                       f"{x.get('latency_max_ms')} | {_exact(x)} | "
                       f"{', '.join(f'{v:g}' for v in x.get('load_1min', []))} |")

    for mem in (x for x in summaries if x["group"] == "memory" and x.get("rss")):
        out += ["", f"## Memory over {_rate(mem['items'])} items (batch {mem['params']['batch']}, "
                f"{_rate(mem['items_per_s'])} items/s, RSS in MiB)", "",
                "| process | early | peak | end | growth |", "| --- | ---: | ---: | ---: | ---: |"]
        for proc, v in mem["rss"].items():
            out.append(f"| {proc} | {v['early_mb']} | {v['peak_mb']} | {v['end_mb']} | "
                       f"{v['growth_mb']} |")

    comp = [x for x in summaries if x["group"] == "competitors"]
    if comp:
        ours_1 = (s.get("ours-batch1") or s.get("ours-unbatched") or {}).get("items_per_s")
        best = max((x["items_per_s"] or 0 for x in batch), default=None)
        out += ["", "## Other queues doing the same job (one task per number, INCRBY into a "
                "key)", "",
                "| queue | configuration | items/s | exact | this project batch 1 is | "
                "best batched is |", "| --- | --- | ---: | --- | ---: | ---: |"]
        for x in comp:
            config = ", ".join(f"{k} {v}" for k, v in x["params"].items())
            r = x["items_per_s"]
            out.append(f"| {x['name']} | {config} | {_spread(x)} | {_exact(x)} | "
                       f"{_times(ours_1, r)} | {_times(best, r)} |")

    transport = [x for x in summaries if x["group"] == "transport"]
    if transport:
        out += ["", "## Transports side by side (2 consumers x 4 workers: threads, or RQ worker "
                "processes)", "",
                "| batch | native items/s | RQ items/s | native is | exact (native / RQ) |",
                "| ---: | ---: | ---: | ---: | --- |"]
        for batch in sorted({x["params"]["batch"] for x in transport}):
            native = s.get(f"transport-native-batch{batch}", {})
            rq = s.get(f"transport-rq-batch{batch}", {})
            out.append(f"| {batch} | {_spread(native) if native else '-'} | "
                       f"{_spread(rq) if rq else '-'} | "
                       f"{_times(native.get('items_per_s'), rq.get('items_per_s'))} | "
                       f"{_exact(native) if native else '-'} / {_exact(rq) if rq else '-'} |")

    shard_rows = [x for x in summaries if x["group"] == "shards"]
    if shard_rows:
        out += ["", "## One run sharded over Redis Cluster primaries (3 consumers x 4 threads; "
                "docs/cluster.md)", "",
                "| batch | one Redis | 1 primary | 2 primaries | 3 primaries | "
                "3 primaries + replica, WAIT 1 | exact |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for batch in sorted({x["params"]["batch"] for x in shard_rows}):
            shard_cells = [s.get(f"shards-batch{batch}-{suffix}", {})
                     for suffix in ("single", "p1", "p2", "p3", "p3-r1")]
            out.append(f"| {batch} | " + " | ".join(_spread(c) if c else "-" for c in shard_cells)
                       + " | " + " / ".join(_exact(c) for c in shard_cells if c) + " |")

    redis_rows = [x for x in summaries if x["group"] == "redis"]
    if redis_rows:
        out += ["", "## The server's own ceiling: redis-benchmark, 50 clients, tiny elements", "",
                "| pipeline | LPUSH/s | RPOP/s |", "| ---: | ---: | ---: |"]
        for x in redis_rows:
            out.append(f"| {x['params']['pipeline']} | {_rate(x.get('lpush_per_s'))} | "
                       f"{_rate(x.get('rpop_per_s'))} |")
    errors = [(x["name"], e) for x in summaries for e in x["errors"]]
    if errors:
        out += ["", "## Errors", ""] + [f"- {name}: {e[:300]}" for name, e in errors]
    # A section that follows the header directly (no targets in a partial suite) would leave
    # two blank lines.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)) + "\n"


def _times(a: float | None, b: float | None) -> str:
    if not (a and b):
        return "-"
    return f"{a / b:,.0f}x" if a / b >= 10 else f"{a / b:.2g}x"


def render(outdir: Path) -> None:
    """Write benchmark.md and the plots again from an existing benchmark.json."""
    from bench import plots

    record = json.loads((outdir / "benchmark.json").read_text())
    summaries = record["experiments"]
    (outdir / "benchmark.md").write_text(
        markdown(summaries, record["machine"], record["fsync"], record["duration_s"]))
    plots.write(outdir, summaries)


def write(outdir: Path, summaries: list[dict[str, Any]], info: dict[str, Any], fsync: str,
          duration_s: float, suite: str) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    record = {"suite": suite, "machine": info, "fsync": fsync,
              "duration_s": round(duration_s, 1), "targets": targets(summaries),
              "experiments": summaries}
    (outdir / "benchmark.json").write_text(json.dumps(record, indent=1) + "\n")
    (outdir / "benchmark.md").write_text(markdown(summaries, info, fsync, duration_s))
