"""The native transport: a Redis list as the queue and this project's scripts (``push.lua``,
``claim.lua``, ``commit.lua``...), worker threads with an in-flight list each."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from exactsum.keys import Keys
from exactsum.options import Options
from exactsum.scripts import Scripts
from exactsum.transport.base import BatchSink, ConsumerContext, ConsumerPool, Transport

if TYPE_CHECKING:
    from producer_service.settings import ProducerSettings


class NativeTransport(Transport):
    name = "native"

    def queue_key(self, keys: Keys, options: Options) -> str:
        return keys.queue

    def queue_label(self, keys: Keys, options: Options) -> str:
        return keys.queue

    def sink(self, client: redis.Redis, keys: Keys, scripts: Scripts, run_id: str, bound: int,
             settings: ProducerSettings, epoch: int) -> BatchSink:
        from exactsum.runs import run_partitions
        from exactsum.transport.native.sink import ListSink

        # On a Redis Cluster the run's partitions, as its meta records them.
        return ListSink(keys, scripts, run_id, bound, epoch,
                        run_partitions(client, keys, run_id))

    def pool(self, context: ConsumerContext) -> ConsumerPool:
        from exactsum.transport.native.pool import ThreadPool

        return ThreadPool(context)


TRANSPORT = NativeTransport()
