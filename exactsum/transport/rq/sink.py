"""The RQ transport's push: one RQ job per batch, enqueued at most once, under the queue's bound.

A push is one MULTI/EXEC transaction holding, for each batch: its element in the run's
``batches`` hash, the RQ job (RQ's own ``enqueue_many`` writes its record and pushes its id on
RQ's queue), and its bit in the run's ``pushed`` bitmap. Before it, one round trip reads which of
the batches are already marked pushed (an earlier transaction whose reply was lost, or an earlier
attempt of the run) and how long RQ's queue is. A batch is pushed by one producer thread only, so
nothing can mark it between that read and the transaction: together they are an enqueue that
happens once, whatever is re-sent.

The run's meta is WATCHed from before that read to the transaction, and its epoch read with the
bits: a producer that resumed the run since (which raises the epoch, a write to the meta) makes
the transaction fail, and the next read finds the epoch moved on: this producer is fenced
(:class:`exactsum.runs.ProducerFenced`), as ``push.lua`` fences on the native transport. So a
batch is never enqueued by two producers of a run, even at once.

The bound is checked against RQ's queue before the transaction, so with several threads the
queue can pass it by at most one push per thread (a few hundred jobs); the native transport's
bound, checked inside its script, is exact.
"""

from __future__ import annotations

import redis
from rq import Queue

from exactsum.keys import Keys, RqKeys
from exactsum.replication import NO_REPLICATION, Replication
from exactsum.runs import check_epoch
from exactsum.transport.rq.jobs import JobOptions, enqueue_jobs


class RqSink:
    def __init__(self, client: redis.Redis, keys: Keys, run_id: str, bound: int,
                 options: JobOptions, epoch: int,
                 replication: Replication = NO_REPLICATION) -> None:
        self.epoch = epoch
        self.client = client
        self.prefix = keys.prefix
        self.run_keys = keys.run(run_id)
        self.run_id = run_id
        self.queue = Queue(options.queue, connection=client)
        self.queue_key = RqKeys(options.queue).queue
        self.bound = bound
        self.options = options
        self.replication = replication

    def send(self, batches: list[tuple[int, int, bytes]]) -> int:
        with self.client.pipeline(transaction=True) as tx:
            while True:
                try:
                    handled = self._send(tx, batches)
                    break
                except redis.WatchError:
                    continue  # the meta changed (a sign of life, or a resume): look again
        # WAIT cannot follow an EXEC in the same round trip through redis-py: a write of our own
        # after it, then WAIT, covers the transaction too (one ordered stream). Also after a
        # re-send that found its batches pushed, by an attempt whose WAIT fell short. The write
        # goes to the run's ``acks`` hash, not to the meta: the other producer threads WATCH the
        # meta, and a write there would make their transactions fail and be redone.
        self.replication.barrier(self.client, self.run_keys.acks)
        return handled

    def _send(self, tx: redis.client.Pipeline, batches: list[tuple[int, int, bytes]]) -> int:
        tx.watch(self.run_keys.meta)  # type: ignore[no-untyped-call]
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.run_keys.meta, "epoch")
        for seq, _, _ in batches:
            pipe.getbit(self.run_keys.pushed, seq)
        pipe.llen(self.queue_key)
        epoch, *pushed, waiting = pipe.execute()
        check_epoch(epoch, self.epoch, self.run_id)
        room = self.bound - int(waiting) if self.bound else len(batches)
        handled = 0
        new: list[tuple[int, int, bytes]] = []
        for (seq, count, element), already in zip(batches, pushed, strict=True):
            if not already:
                if room <= 0:
                    break
                room -= 1
                new.append((seq, count, element))
            handled += 1
        if not new:
            tx.unwatch()
            return handled
        tx.multi()
        for seq, _, element in new:
            tx.hset(self.run_keys.batches, str(seq), element)
        enqueue_jobs(self.queue, tx, self.prefix, self.run_id,
                     ((seq, count) for seq, count, _ in new), self.options)
        for seq, _, _ in new:
            tx.setbit(self.run_keys.pushed, seq, 1)
        tx.execute()
        return handled
