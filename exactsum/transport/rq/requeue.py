"""An operator's requeue of a dead-lettered batch of an RQ run (``python -m exactsum_admin dead
requeue``)."""

from __future__ import annotations

from collections.abc import Mapping

import redis
from rq import Queue

from exactsum.keys import Keys
from exactsum.transport.rq.jobs import JobOptions, enqueue_jobs


def requeue_dead(client: redis.Redis, keys: Keys, run_id: str, meta: Mapping[bytes, bytes],
                 raw: bytes, element: bytes, seq: int, count: int) -> bool:
    """A dead-lettered batch of an RQ run goes back as a new RQ job (same id, fresh retries, on
    the run's RQ queue, with the job options the producer recorded in the run's meta), in one
    transaction with making it unresolved again; False if the entry is no longer there."""
    options = JobOptions.from_meta(meta)
    rk = keys.run(run_id)
    entry = raw.decode()  # JSON: ASCII text, as the scripts stored it
    queue = Queue(options.queue, connection=client)
    with client.pipeline(transaction=True) as tx:
        while True:
            try:
                tx.watch(rk.dead)  # type: ignore[no-untyped-call]
                if tx.lpos(rk.dead, entry) is None:
                    return False
                tx.multi()
                tx.hset(rk.batches, str(seq), element)
                tx.setbit(rk.done, seq, 0)
                tx.decrby(rk.dead_items, count)
                tx.hdel(rk.attempts, str(seq))
                tx.lrem(rk.dead, 1, entry)
                enqueue_jobs(queue, tx, keys.prefix, run_id, [(seq, count)], options)
                tx.execute()
                return True
            except redis.WatchError:
                continue
