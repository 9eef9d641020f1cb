"""What a transport is: the one interface both services speak to, whichever way batches travel.

A transport is one package under ``exactsum/transport/`` whose ``TRANSPORT`` is a
:class:`Transport`. The producer asks it for a sink (where pushes go) and what to record in the
run's meta; the consumer service asks it for a pool (the workers and the reclaimer) and keeps
for itself the heartbeat, the id file, the grace and the order of the stop; progress and status
ask it which Redis list holds the batches waiting. ``--transport NAME`` picks one by name
(:func:`exactsum.transport.get`): adding a transport is adding a package. A transport declares
its own options too (:attr:`Transport.consumer_options`, :attr:`Transport.producer_options`):
the services' command lines take every transport's, and hand the picked one its own object of
them (``settings.transport_options``).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import redis

from exactsum.cluster import PartitionDirectory
from exactsum.events import ConsumerEvents
from exactsum.keys import Keys
from exactsum.options import Options
from exactsum.scripts import Moved, Scripts

if TYPE_CHECKING:
    from consumer_service.settings import ConsumerSettings
    from producer_service.settings import ProducerSettings


class BatchSink(Protocol):
    """Where the producer's pushes go.

    ``send`` takes ``(sequence number, items, element)`` triples in order and returns how many
    of them, from the first, are now pushed, counting those already pushed by an earlier call
    whose reply was lost; it stops at the first that does not fit under the queue's bound.
    Sending the same batches again must be harmless: :func:`retrying` re-sends after errors.
    It raises :class:`~exactsum.runs.ProducerFenced`, having pushed nothing, when the run's
    epoch has moved on (another producer took the run over).
    """

    def send(self, batches: list[tuple[int, int, bytes]]) -> int: ...


@dataclass(frozen=True)
class ConsumerContext:
    """What the consumer service hands the transport's pool."""

    settings: ConsumerSettings
    consumer_id: str
    keys: Keys
    scripts: Scripts
    events: ConsumerEvents
    # Set by the pool when it cannot go on (a worker's fatal error): the service stops.
    on_fatal: Callable[[], None]
    # The partitions to claim from (Redis Cluster), kept up to date by the service's heartbeat;
    # without Cluster the one untagged layout.
    directory: PartitionDirectory | None = None


class ConsumerPool(ABC):
    """A consumer's workers and its reclaimer, run by the consumer service.

    The service calls, in order: :meth:`start` (after the first heartbeat), :meth:`run_until`
    (until a signal or :attr:`ConsumerContext.on_fatal`), :meth:`stop` (within the grace), then
    withdraws the heartbeat.
    """

    @abstractmethod
    def describe(self) -> str:
        """For the start-up log line: the pool and the queue it serves."""

    @abstractmethod
    def start(self) -> None: ...

    def run_until(self, wake: threading.Event) -> None:
        """Keep the pool running until ``wake`` is set."""
        wake.wait()

    @abstractmethod
    def stop(self, finish_by: float, give_back_by: float) -> int:
        """Stop claiming; let work in hand finish until ``finish_by`` (monotonic), then put
        back whatever is still held, until ``give_back_by``; return the elements given back."""

    @abstractmethod
    def committed(self, client: redis.Redis) -> int:
        """Items this consumer has committed, for the heartbeat (``client`` is the heartbeat's
        connection, on the heartbeat's thread)."""

    def failure(self) -> BaseException | None:
        """The error that stopped the pool, if one did."""
        return None

    def stats(self) -> dict[str, object] | None:
        """The pool's facts for ``--stats-file`` (push-to-commit latency); None: the pool
        records none, and no file is written."""
        return None


class Transport(ABC):
    """One way for batches to travel from the producer to the consumers' pools."""

    name: str
    # The transport's own options: a frozen settings class (exactsum.options) for each service,
    # whose fields are options of that service's command line whichever transport is picked
    # (so --help and docs/options.md list them all), and whose object the picked transport
    # gets as the service's ``settings.transport_options``. ``Options``: none. The producer's
    # may extend the consumer's (the options both services take).
    consumer_options: type[Options] = Options
    producer_options: type[Options] = Options

    @abstractmethod
    def queue_key(self, keys: Keys, options: Options) -> str:
        """The Redis list whose length is the number of batches waiting (``options``: the
        service's ``transport_options``, for transports whose queue is an option)."""

    @abstractmethod
    def queue_label(self, keys: Keys, options: Options) -> str:
        """The queue, as a log line names it."""

    def missing(self) -> str | None:
        """What must be installed for this transport, when it is not; None when nothing is."""
        return None

    def prefix_problem(self, prefix: str) -> str | None:
        """Why this transport cannot work under key prefix ``prefix``; None when it can."""
        return None

    def cluster_problem(self) -> str | None:
        """Why this transport cannot run on a Redis Cluster (``--redis-cluster``); None when
        it can (its scripts touch the keys of one partition's hash slot only)."""
        return None

    def run_meta(self, settings: ProducerSettings) -> dict[str, str | int]:
        """What the producer records in the run's meta besides the transport's name, for the
        consumers and the operator tools (its own options that they must follow)."""
        return {}

    def queue_of_run(self, keys: Keys, meta: Mapping[bytes, bytes]) -> str:
        """The queue key of a run, from its meta (for status and progress); by default the
        native queue."""
        return keys.queue

    def own_queue(self, keys: Keys, meta: Mapping[bytes, bytes]) -> tuple[str, str] | None:
        """For status and the dashboard: the name and Redis list of the queue where a run's
        batches wait when it is not the native ``keys.queue`` (the RQ transport's named
        queues); None when they wait on the native queue (``meta``: the run's meta)."""
        return None

    def requeue_dead(self, client: redis.Redis, keys: Keys, scripts: Scripts, run_id: str,
                     meta: Mapping[bytes, bytes], raw: bytes, element: bytes, seq: int,
                     count: int) -> bool:
        """Put a dead-lettered batch of a run back, unresolved (``raw`` is its entry in the
        run's dead letters, ``meta`` the run's meta); False if the entry is no longer there.
        By default on the native queue, through ``requeue_dead.lua``."""
        rk = keys.run(run_id)
        return Moved(int(scripts.requeue_dead(
            keys=[rk.dead, keys.queue, rk.done, rk.dead_items, rk.attempts],
            args=[raw, element, seq, count],
        ))) == Moved.MOVED

    @abstractmethod
    def sink(self, client: redis.Redis, keys: Keys, scripts: Scripts, run_id: str, bound: int,
             settings: ProducerSettings, epoch: int) -> BatchSink:
        """The producer's push for one attempt at a run; ``epoch`` is the attempt's, so that a
        producer another one took the run over from is fenced (``ProducerFenced``)."""

    @abstractmethod
    def pool(self, context: ConsumerContext) -> ConsumerPool: ...
