"""The article's closing report, made honest: what was produced, counted, lost and doubled."""

from __future__ import annotations

import json

from exactsum.runs import Audit


def verdict(audit: Audit) -> str:
    if audit.exact:
        return "verified exact: every item counted exactly once"
    if audit.accounted:
        return (
            f"nothing lost or counted twice, but {audit.dead_lettered} items are in dead letters "
            "(not in the sum)"
        )
    return "NOT VERIFIED: " + "; ".join(audit.problems or ["the counts do not add up"])


def as_json(audit: Audit, elapsed_s: float, timed_out: bool) -> str:
    record = audit.as_dict()
    record["elapsed_s"] = round(elapsed_s, 3)
    record["items_per_s"] = round(audit.produced / elapsed_s, 1) if elapsed_s > 0 else None
    record["timed_out"] = timed_out
    record["verdict"] = verdict(audit)
    return json.dumps(record)


def as_text(audit: Audit, elapsed_s: float, timed_out: bool) -> str:
    rate = audit.produced / elapsed_s if elapsed_s > 0 else 0.0
    lines = [
        f"run {audit.run_id}",
        f"  items produced    : {audit.produced}",
        f"  items committed   : {audit.committed}",
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
    if timed_out:
        lines.append("  timed out waiting for the consumers")
    lines.append(verdict(audit))
    return "\n".join(lines)


def exit_status(audit: Audit, timed_out: bool) -> int:
    if audit.exact and not timed_out:
        return 0
    if audit.accounted and not timed_out:
        return 3
    return 1
