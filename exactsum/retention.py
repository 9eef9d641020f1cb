"""Retention: a finished run's keys expire, each side expiring the keys it wrote.

The producer gives its own keys (meta, pushed, batches) the run's retention when it ends; the
consumers' reclaimers give the rest theirs once they see the run finished, and forget runs
whose meta is gone. Neither side needs write access to the other's keys.
"""

from __future__ import annotations

from typing import cast

import redis

from exactsum.keys import RUN_KEY_SUFFIXES, Keys
from exactsum.runs import FINAL_STATES, PRODUCER_WRITES, partitions_of, run_partitions


def expire_run(client: redis.Redis, keys: Keys, run_id: str, retention_s: int) -> None:
    """The producer's part of retention: its own keys go after ``retention_s`` seconds. The
    consumers expire the rest when they see the run finished (:func:`expire_finished_runs`)."""
    parts = run_partitions(client, keys, run_id)
    pipe = client.pipeline(transaction=False)
    for part in {keys.home, *parts}:
        rk = part.run(run_id)
        for name in PRODUCER_WRITES:
            pipe.expire(getattr(rk, name), retention_s)
    pipe.execute()


def expire_finished_runs(client: redis.Redis, keys: Keys) -> int:
    """The consumers' part of retention: give the keys they wrote for each finished run the
    run's retention time (only where no expiry is set yet), and forget runs whose meta is gone.
    Returns the number of runs forgotten.

    A run whose meta is gone has had its retention (only the producer's retention expires the
    meta, and a run is listed only after its meta exists). If no consumer looked while the meta
    was there (all were down, or the retention was shorter than the time between two passes),
    the keys the consumers wrote have no expiry yet: they get a short one now, or they would
    stay for ever once the run is forgotten."""
    run_ids = [r.decode() for r in cast(list[bytes], client.zrange(keys.runs, 0, -1))]
    if not run_ids:
        return 0
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hmget(keys.home.run(run_id).meta, ["state", "retention_s", "partitions"])
    metas = pipe.execute()
    gone = [run_id for run_id, (state, _, _) in zip(run_ids, metas, strict=True)
            if state is None]
    for run_id, (state, retention, parts) in zip(run_ids, metas, strict=True):
        if state is None or state.decode() not in FINAL_STATES or retention is None:
            continue
        for part in partitions_of(keys, parts):
            rk = part.run(run_id)
            for name in RUN_KEY_SUFFIXES:
                if name not in PRODUCER_WRITES:
                    pipe.expire(getattr(rk, name), int(retention), nx=True)
    for run_id in gone:
        # The meta, and with it the list of partitions, is gone: the untagged keys are all
        # that can be found here (on a cluster the partitions' keys were given their expiry
        # when the run finished).
        rk = keys.home.run(run_id)
        for name in RUN_KEY_SUFFIXES:
            if name not in PRODUCER_WRITES:
                pipe.expire(getattr(rk, name), 1)
    if gone:
        pipe.zrem(keys.runs, *gone)
    pipe.execute()
    return len(gone)
