"""The chaos run's tables: faults of each kind, and what was counted."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.checker import CheckerReport
from chaos.episodes import KINDS, KindSummary, Outcome, spread
from chaos.transports import view
from exactsum.transport import DEFAULT

KIND_NAMES = {
    "sigkill": "consumer SIGKILL + replacement",
    "sigstop": "consumer SIGSTOP past heartbeat",
    "redis": "redis-server kill -9 + restart",
    "partition": "consumer cut off the network",
    "rqworker": "one RQ worker process SIGKILLed",
    "failover": "primary kill -9, failover (Sentinel or Cluster)",
    "producer": "producer SIGKILL + resume",
}
REDIS_NAMES = {
    "sentinel": " (Redis Sentinel: a primary, two replicas, three Sentinels)",
    "cluster": " (Redis Cluster: three primaries with a replica each, the run in partitions)",
}
RECOVER_MEANING = {
    "sigkill": "kill -> its claims back on the queue",
    "sigstop": "stop -> its claims reclaimed; back: SIGCONT -> it commits again",
    "redis": "kill -> commits resume; back: restart -> commits resume",
    "partition": "link down -> its claims reclaimed; back: link up -> it commits again",
    "rqworker": "kill -> its jobs back on RQ's queue; back: kill -> a new worker in its place",
    "failover": "kill -> first commit on the promoted replica; back: kill -> the old primary "
                "replicates from the new one",
    "producer": "kill -> the same command again pushes the rest",
}


@dataclass
class ChaosResult:
    seed: int
    transport: str
    items: int
    batch: int
    consumers: int
    duration_s: float
    redis: str = "single"  # "sentinel": a primary, two replicas, three Sentinels; "cluster"
    elapsed_s: float = 0.0
    expected_sum: int = 0
    sum: int = 0
    committed: int = 0
    lost: int = 0
    duplicated: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    stale_commits: int = 0
    refusals_logged: int = 0
    retried: int = 0
    producer_status: int | None = None
    producer_exact: bool = False
    producer_attempts: int = 1  # producers started: one more after each producer fault
    consumer_exits: dict[str, int | None] = field(default_factory=dict)
    checker: CheckerReport = field(default_factory=CheckerReport)
    kinds: list[KindSummary] = field(default_factory=list)
    disabled: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    workdir: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_json(self) -> str:
        record: dict[str, Any] = asdict(self)
        record["passed"] = self.passed
        return json.dumps(record)


def table_kinds(kinds: list[KindSummary]) -> list[str]:
    """The native kinds always (a kind not asked for shows as 0), then any other that ran."""
    return [*KINDS, *(k.kind for k in kinds if k.kind not in KINDS)]


def fault_table(kinds: list[KindSummary], disabled: dict[str, str]) -> str:
    lines = [
        "| fault | injected | landed | failed | recover s (median / max) "
        "| back s (median / max) | late commits refused |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_kind = {k.kind: k for k in kinds}
    for kind in table_kinds(kinds):
        name = KIND_NAMES[kind]
        if kind in disabled:
            lines.append(f"| {name} | skipped: {disabled[kind]} | | | | | |")
            continue
        k = by_kind.get(kind) or KindSummary.of(kind, [])
        skipped = f" (+{k.skipped} skipped)" if k.skipped else ""
        lines.append(f"| {name} | {k.injected}{skipped} | {k.landed} | {k.failed} | "
                     f"{spread(k.recover)} | {spread(k.back)} | {k.fenced} |")
    return "\n".join(lines)


def result_table(r: ChaosResult) -> str:
    c = r.checker
    words = view(r.transport)
    moved, retried, commit = words.reclaimed_words, words.retried_words, words.commit_script
    rows = [
        ("seed", str(r.seed) + ("" if r.transport == DEFAULT else f" (transport {r.transport})")
         + REDIS_NAMES.get(r.redis, "")),
        ("items", f"{r.items:,} in batches of {r.batch}, {r.consumers} consumers"),
        ("sum", f"{r.sum} (expected {r.expected_sum}, computed by the harness from its file)"),
        ("committed", f"{r.committed:,}"),
        ("lost", str(r.lost)),
        ("duplicated", str(r.duplicated)),
        ("dead-lettered", str(r.dead_lettered)),
        ("reclaimed", f"{r.reclaimed:,} {moved}"),
        ("flaky failures retried", f"{r.retried:,} ({retried})"),
        ("stale commits refused", f"{r.stale_commits:,} by {commit}; {r.refusals_logged:,} "
         "refusals counted by consumers (a refusal whose reply was lost to a Redis kill is "
         "re-sent and refused again)"),
        ("conservation samples", f"{c.samples:,} ({c.failed_samples} while Redis was down"
         + (f", {c.partial_samples} without a partition whose primary was failing over"
            if c.partial_samples else "") + "); "
         f"{c.transient} transient and {len(c.persistent)} persistent violations; longest "
         f"time a dead consumer held claims {c.max_orphan_age_s:.2f} s"),
        ("producer attempts", f"{r.producer_attempts} (the last resumed the run and reported "
         "it)" if r.producer_attempts > 1 else "1"),
        ("faults for", f"{r.duration_s:.0f} s; whole run {r.elapsed_s:.1f} s"),
        ("verdict", "PASS" if r.passed else "FAIL: " + "; ".join(r.failures)),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def render(result: ChaosResult, outcomes: list[Outcome]) -> str:
    parts = [
        "Fault episodes:",
        *("  " + o.line() for o in outcomes),
        "",
        fault_table(result.kinds, result.disabled),
        "",
        "Time to recover: " + "; ".join(f"{k}: {RECOVER_MEANING[k]}"
                                        for k in table_kinds(result.kinds)),
        "",
        result_table(result),
    ]
    if result.checker.examples:
        parts += ["", "Violations seen:", *("  " + e for e in result.checker.examples)]
    return "\n".join(parts)
