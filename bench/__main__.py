"""``python -m bench full|quick``: run a suite, write results, print the summary.

``full`` writes ``benchmark.md``, ``benchmark.json`` and PNG plots to ``--out`` (default
``bench/results``). ``quick`` prints one JSON object as its last line (and writes the same files
only if ``--out`` is given). Progress goes to stderr, one line per run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import machine, plots, report, server, suite


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suite", choices=["full", "quick", "render"],
                        help="render: rewrite benchmark.md and the plots of --out from its "
                        "benchmark.json")
    parser.add_argument("--reps", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every run's item count (smoke tests use ~0.01)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory (full: default bench/results)")
    parser.add_argument("--fsync", choices=["always", "everysec", "no"],
                        default=server.DEFAULT_FSYNC, help="the servers' appendfsync")
    parser.add_argument("--only", default="",
                        help="comma-separated groups to run (batch, scaling, work, latency, "
                        "memory, transport, competitors, redis, shards)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the processes' logs and each run's result.json "
                        "(printed path)")
    args = parser.parse_args(argv)
    if args.suite == "render":
        report.render(args.out or Path("bench/results"))
        return 0

    info = machine.describe()
    print(f"machine: {machine.one_line(info)}", file=sys.stderr, flush=True)
    exps = (suite.full if args.suite == "full" else suite.quick)(args.scale, args.reps)
    if args.only:
        groups = set(args.only.split(","))
        exps = [e for e in exps if e.group in groups]
    workdir = Path(tempfile.mkdtemp(prefix="exactsum-bench-"))
    started = time.monotonic()
    try:
        suite.run_all(exps, workdir, args.fsync)
    finally:
        if args.keep_logs:
            print(f"logs: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    duration = time.monotonic() - started
    info["load_average_at_end"] = machine.load_average()
    summaries = [e.summary() for e in exps]
    out = args.out or (Path("bench/results") if args.suite == "full" else None)
    if out is not None:
        report.write(out, summaries, info, args.fsync, duration, args.suite)
        for path in plots.write(out, summaries):
            print(f"wrote {path}", file=sys.stderr)
        print(f"wrote {out / 'benchmark.md'} and {out / 'benchmark.json'}", file=sys.stderr)
    exact = all(s["exact"] for s in summaries)
    if args.suite == "quick":
        print(json.dumps(report.quick_line(summaries, info, duration)), flush=True)
    else:
        print(report.markdown(summaries, info, args.fsync, duration))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
