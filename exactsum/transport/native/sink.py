"""The native transport's push: ``push.lua`` puts a push's batches on the queue list.

Each batch goes on at most once (the run's ``pushed`` bitmap makes a re-sent push a no-op), the
script stops at the queue's bound (the producer's backpressure), and it checks the run's epoch
in the same atomic step, so a producer another one took the run over from pushes nothing.
"""

from __future__ import annotations

from exactsum.keys import Keys, partition_of
from exactsum.runs import ProducerFenced
from exactsum.scripts import Scripts


class ListSink:
    """The native transport's :class:`~exactsum.transport.base.BatchSink`.

    On a Redis Cluster (``parts``, the run's partitions) batch ``n`` goes to partition
    ``n mod len(parts)``: one call of ``push.lua`` per partition, each in its own slot (the
    epoch is checked in the partition's copy of the meta), and each partition's queue bounded
    by its share of the bound."""

    def __init__(self, keys: Keys, scripts: Scripts, run_id: str, bound: int,
                 epoch: int, parts: list[Keys] | None = None) -> None:
        self.scripts = scripts
        parts = parts or [keys]
        self.targets = [[part.queue, part.run(run_id).pushed, part.run(run_id).meta]
                        for part in parts]
        self.run_id, self.epoch = run_id, epoch
        self.bound = max(1, bound // len(parts)) if bound else 0

    def send(self, batches: list[tuple[int, int, bytes]]) -> int:
        if len(self.targets) == 1:
            return self._send(0, batches)
        positions: dict[int, list[int]] = {}
        for position, (seq, _, _) in enumerate(batches):
            positions.setdefault(partition_of(seq, len(self.targets)), []).append(position)
        # The answer is a prefix of ``batches``: up to the first batch a partition had no room
        # for. Batches of other partitions pushed beyond it are found pushed when re-sent.
        first_left = len(batches)
        for part, where in positions.items():
            handled = self._send(part, [batches[i] for i in where])
            if handled < len(where):
                first_left = min(first_left, where[handled])
        return first_left

    def _send(self, part: int, batches: list[tuple[int, int, bytes]]) -> int:
        args: list[bytes | int] = [self.bound, self.epoch]
        for seq, _, element in batches:
            args += [seq, element]
        handled = int(self.scripts.push(keys=self.targets[part], args=args))
        if handled < 0:
            raise ProducerFenced(f"run {self.run_id!r} was taken over by another producer "
                                 f"(this producer's epoch {self.epoch} is past); this producer "
                                 "stops and leaves the run to it")
        return handled
