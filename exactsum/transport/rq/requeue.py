"""An operator's requeue of a dead-lettered batch of an RQ run (``python -m exactsum_admin dead
requeue``)."""

from __future__ import annotations

from collections.abc import Mapping

import redis
from rq import Queue

from exactsum.keys import Keys
from exactsum.replication import NO_REPLICATION, Replication
from exactsum.transport.rq.jobs import JobOptions, enqueue_jobs


def requeue_dead(client: redis.Redis, keys: Keys, run_id: str, meta: Mapping[bytes, bytes],
                 raw: bytes, element: bytes, seq: int, count: int,
                 replication: Replication = NO_REPLICATION) -> bool:
    """A dead-lettered batch of an RQ run goes back as a new RQ job (same id, fresh retries, on
    the run's RQ queue, with the job options the producer recorded in the run's meta), in one
    transaction with making it unresolved again; False if the entry is no longer there.
    With ``--min-replicas`` it returns only once the replicas have the transaction (a barrier
    after it): a failover that lost it would leave the entry in the dead letters, where the
    operator finds it again."""
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
                break
            except redis.WatchError:
                continue
    replication.barrier(client, rk.acks)
    return True
