"""``python -m bench.profile``: where one run of this project spends its time.

Runs the pipeline once with py-spy attached to the producer and the first consumer, then
prints, per process, the functions with the most samples while holding the GIL (py-spy
``--gil``: Python's own CPU time; waits on sockets and locks are left out) and Redis' busiest
commands (``INFO commandstats``), besides each side's CPU seconds. Needs the bench extra
(py-spy) and ptrace permission (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import ours, procs


def top_frames(path: Path, limit: int = 15) -> tuple[int, list[tuple[str, int, int]]]:
    """(samples, [(frame, self samples, inclusive samples)]) from py-spy's raw output."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        self_counts[frames[-1]] += n
        for frame in set(frames):
            incl_counts[frame] += n
    rows = [(frame, n, incl_counts[frame]) for frame, n in self_counts.most_common(limit)]
    return total, rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    if procs.tool("py-spy") is None:
        parser.error("py-spy is not installed (pip install -e '.[bench]')")
    workdir = Path(tempfile.mkdtemp(prefix="exactsum-profile-"))
    cfg = ours.OursConfig(args.batch, args.consumers, args.threads, args.items)
    result = ours.run(cfg, workdir, profile=True)
    print(f"{cfg.label()}: {result.get('items_per_s')} items/s, exact={result.get('exact')}")
    print(f"CPU seconds: {json.dumps(result.get('cpu_s'))}")
    for name in ("producer", "consumer0"):
        path = workdir / f"{name}.pyspy.txt"
        if not path.exists():
            print(f"\n{name}: no py-spy output ({workdir / (name + '-py-spy.err')})")
            continue
        total, rows = top_frames(path)
        print(f"\n{name}: {total} samples holding the GIL (250/s); top functions by self "
              "time (self %, inclusive %)")
        for frame, own, incl in rows:
            print(f"  {100 * own / total:5.1f}%  {100 * incl / total:5.1f}%  {frame[:110]}")
    print("\nredis: busiest commands")
    for row in result.get("redis_commands", []):
        print(f"  {row['command']:<14} {row['calls']:>9} calls {row['usec']:>10} us "
              f"({row['usec_per_call']} us/call)")
    print(f"\nraw profiles in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
