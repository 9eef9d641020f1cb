"""PNG plots of a suite's summaries (matplotlib, an optional development dependency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Colours of the figures: ours first, then the other queues and the server's ceiling.
OURS = "#1f77b4"
OTHERS = {"rq-simple": "#d62728", "rq-fork": "#ff9896", "dramatiq": "#2ca02c",
          "celery": "#9467bd", "rq-simple-1000-per-job": "#8c564b"}


def write(outdir: Path, summaries: list[dict[str, Any]]) -> list[Path]:
    """Write the plots that the summaries have data for; returns their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional: `pip install -e '.[bench]'`
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    plt.rcParams.update({"font.size": 9})

    batch = [s for s in summaries if s["group"] == "batch" and s["items_per_s"]]
    if batch:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=90)
        xs = [s["params"]["batch"] for s in batch]
        ax.plot(xs, [s["items_per_s"] for s in batch], "o-", color=OURS,
                label="exactsum (2 consumers x 4 threads)")
        for s in summaries:
            if s["group"] == "competitors" and s["items_per_s"]:
                per = s["params"].get("numbers_per_job", 1)
                what = "one task per item" if per == 1 else f"{per} items per task"
                ax.axhline(s["items_per_s"], color=OTHERS.get(s["name"], "grey"), ls="--",
                           label=f"{s['name']} ({what})")
            if s["group"] == "redis" and s.get("lpush_per_s"):
                ax.axhline(s["lpush_per_s"], color="black", ls=":",
                           label=f"redis-benchmark LPUSH, pipeline {s['params']['pipeline']}")
        ax.axhline(1_000_000, color="grey", lw=0.8, label="target: 1,000,000 items/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items per queue element (--batch)")
        ax.set_ylabel("items/s, push to commit, exact")
        ax.set_title("Throughput against batch size")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(True, which="both", alpha=0.3)
        written.append(_save(fig, outdir / "batch.png"))

    scaling = [s for s in summaries if s["group"] == "scaling"]
    if scaling:
        sizes = sorted({s["params"]["batch"] for s in scaling})
        fig, axes = plt.subplots(1, len(sizes), figsize=(7, 3.6), dpi=90, squeeze=False)
        for ax, size in zip(axes[0], sizes, strict=True):
            rows = [s for s in scaling if s["params"]["batch"] == size]
            for threads in sorted({s["params"]["threads"] for s in rows}):
                pts = sorted((s["params"]["consumers"], s["items_per_s"] or 0)
                             for s in rows if s["params"]["threads"] == threads)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-",
                        label=f"{threads} thread{'s' if threads > 1 else ''} each")
            ax.set_xticks([1, 2, 4])
            ax.set_xlabel("consumer processes")
            ax.set_title(f"batch {size}")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("items/s")
        fig.suptitle("Throughput against consumers (1 producer)")
        written.append(_save(fig, outdir / "consumers.png"))

    work = [s for s in summaries if s["group"] == "work"]
    if work:
        fig, axes = plt.subplots(1, 2, figsize=(7, 3.6), dpi=90)
        for ax, kind, title in ((axes[0], "cpu", "CPU-bound work"),
                                (axes[1], "io", "I/O-bound work")):
            rows = [s for s in work if s["params"]["work"] == kind]
            if not rows:
                continue
            for mode, style in (("threads", "o-"), ("processes", "s--")):
                pts = sorted((s["params"]["workers"], s["items_per_s"] or 0) for s in rows
                             if s["params"]["mode"] == mode
                             or (s["params"]["workers"] == 1))
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style,
                        label="threads in 1 process" if mode == "threads"
                        else "processes x 1 thread")
            p = rows[0]["params"]
            what = (f"{p['work_cpu_us']:g} us CPU per item" if kind == "cpu"
                    else f"{p['work_io_ms']:g} ms wait per item")
            ax.set_title(f"{title} ({what})")
            ax.set_xscale("log", base=2)
            ax.set_xticks([1, 2, 4, 16])
            ax.set_xticklabels(["1", "2", "4", "16"])
            ax.set_xlabel("workers (threads or processes)")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        axes[0].set_ylabel("items/s")
        written.append(_save(fig, outdir / "work.png"))

    memories = [s for s in summaries if s["group"] == "memory" and s.get("rss_samples")]
    if memories:
        fig, axes = plt.subplots(1, len(memories), figsize=(7, 3.2), dpi=90, squeeze=False)
        for ax, memory in zip(axes[0], memories, strict=True):
            samples = memory["rss_samples"]
            for name in sorted({n for _, row in samples for n in row}):
                pts = [(t, row[name]) for t, row in samples if name in row]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
            ax.set_xlabel("seconds into the run")
            ax.set_ylim(bottom=0)
            ax.set_title(f"10M items, batch {memory['params']['batch']}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        axes[0][0].set_ylabel("RSS, MiB")
        fig.suptitle("Memory over a run (2 consumers x 4 threads)")
        written.append(_save(fig, outdir / "memory.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
