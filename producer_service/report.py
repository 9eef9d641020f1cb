"""The article's closing report, made honest: what was produced, counted, lost and doubled."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from exactsum.audit import Audit
from exactsum.counters import COUNTERS


@dataclass(frozen=True)
class Facts:
    """What the report says besides the audit: this attempt, and a stream's input."""

    epoch: int = 1  # 1 for a run's first attempt; each resumption adds one
    resumed: bool = False
    pushed_before: int = 0  # items that earlier attempts of the run had pushed
    complete: bool = True  # every batch pushed; False: interrupted, can be resumed
    batch_size: int = 0
    lines_read: int | None = None  # a stream's lines read (and pushed)
    ended_by: str | None = None  # a stream's end: "end of input", "signal", "bad line"
    input_error: str | None = None  # a stream's bad line: "stdin: line N: why"


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (the kernel's VmHWM; Linux only). Not getrusage's
    ru_maxrss: that one keeps the high-water mark of the process before its exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def verdict(audit: Audit, facts: Facts | None = None) -> str:
    if facts is not None and not facts.complete:
        return (f"INCOMPLETE: {audit.not_pushed} items not pushed yet; resume with the same "
                f"source, --batch {facts.batch_size} and --run-id {audit.run_id}")
    if audit.exact:
        return "verified exact: every item counted exactly once"
    if audit.accounted:
        return (
            f"nothing lost or counted twice, but {audit.dead_lettered} items are in dead letters "
            "(not in the sum)"
        )
    return "NOT VERIFIED: " + "; ".join(audit.problems or ["the counts do not add up"])


def as_json(audit: Audit, elapsed_s: float, timed_out: bool, facts: Facts | None = None) -> str:
    facts = facts or Facts()
    record = audit.as_dict()
    record["elapsed_s"] = round(elapsed_s, 3)
    attempted = audit.produced - facts.pushed_before  # this attempt's items
    record["items_per_s"] = round(attempted / elapsed_s, 1) if elapsed_s > 0 else None
    record["timed_out"] = timed_out
    record.update(asdict(facts))
    record["peak_rss_mib"] = peak_rss_mib()
    record["verdict"] = verdict(audit, facts)
    record["counters"] = COUNTERS.snapshot()
    return json.dumps(record)


def as_text(audit: Audit, elapsed_s: float, timed_out: bool, facts: Facts | None = None) -> str:
    facts = facts or Facts()
    rate = (audit.produced - facts.pushed_before) / elapsed_s if elapsed_s > 0 else 0.0
    lines = [f"run {audit.run_id}"]
    if facts.resumed:
        lines.append(f"  resumed           : attempt {facts.epoch}; {facts.pushed_before} items "
                     "were pushed before, not pushed again")
    if facts.lines_read is not None:
        lines.append(f"  lines read        : {facts.lines_read} (input ended by {facts.ended_by})")
    if facts.input_error is not None:
        lines.append(f"  stopped at        : {facts.input_error}")
    lines += [
        f"  items produced    : {audit.produced}",
        f"  items committed   : {audit.committed}",
    ]
    if audit.pending or timed_out:
        lines.append(f"  items pending     : {audit.pending} (pushed, not counted yet)")
    if not facts.complete:
        lines.append(f"  items not pushed  : {audit.not_pushed}")
    lines += [
        f"  items lost        : {audit.lost}",
        f"  counted twice     : {audit.duplicated}",
        f"  dead-lettered     : {audit.dead_lettered}",
        f"  the sum is        : {audit.sum}",
        f"  expected sum      : {audit.expected_sum}",
        f"  stale commits     : {audit.stale_commits} (refused, not counted)",
    ]
    for consumer, items in sorted(audit.by_consumer.items()):
        lines.append(f"  consumer {consumer}: {items} items")
    lines.append(f"  execution time    : {elapsed_s:.3f} s ({rate:,.0f} items/s)")
    if timed_out and facts.complete:
        lines.append("  timed out waiting for the consumers")
    lines.append(verdict(audit, facts))
    return "\n".join(lines)


def exit_status(audit: Audit, timed_out: bool) -> int:
    if audit.exact and not timed_out:
        return 0
    if audit.accounted and not timed_out:
        return 3
    return 1
