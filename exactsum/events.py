"""What the services tell an observer (metrics, for one) as they work: a small interface.

The worker, the reclaimer and the pusher call these methods at the moments that matter, once
per batch or per script call and never per item, and know nothing of what is done with them.
The defaults do nothing, so a service without an observer pays one method call per batch.
"""

from __future__ import annotations

from exactsum.protocol import Batch


class ConsumerEvents:
    """Told by a consumer's threads; each method may be called from several threads at once."""

    def on_commit(self, batch: Batch, claim_s: float) -> None:
        """``batch`` was counted into its run, ``claim_s`` seconds after the worker took it."""

    def on_refused(self, batch: Batch, reason: str) -> None:
        """A commit counted nothing: ``already_counted`` (re-sent, or counted by another
        consumer after a reclaim) or ``fenced`` (reclaimed from us while we were away)."""

    def on_retry(self, batch: Batch) -> None:
        """Processing ``batch`` failed and it went back to the queue for another attempt."""

    def on_dead_letter(self, batch: Batch) -> None:
        """``batch`` went to its run's dead letters."""

    def on_foreign(self) -> None:
        """An element that is not ours (or of an unknown run) went to the dead letters."""

    def on_reclaim(self, elements: int) -> None:
        """This consumer's reclaimer moved ``elements`` claims of a dead consumer back."""


class ProducerEvents:
    """Told by a producer's push threads."""

    def on_push(self, run_id: str, batches: int, items: int) -> None:
        """``batches`` holding ``items`` items were stored on the queue (pushed once each)."""

    def on_wait(self, run_id: str) -> None:
        """A push found the queue at its bound and waits for the consumers (backpressure)."""


NO_CONSUMER_EVENTS = ConsumerEvents()
NO_PRODUCER_EVENTS = ProducerEvents()
