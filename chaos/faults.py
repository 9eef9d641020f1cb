"""The fault injector: a schedule drawn from the seed, and one thread per fault episode.

The schedule (when, which kind, how long, which of the eligible consumers) depends on the seed
alone, so a seed replays the same faults; what the processes happen to be doing at that moment
does not replay exactly. Kinds:

``sigkill``    SIGKILL a consumer that holds claims, start a replacement in its slot after a
               short delay. Recovered when the dead consumer's claims are back on the queue.
``sigstop``    SIGSTOP a consumer that holds claims, keep it stopped until its heartbeat has
               lapsed and its claims were reclaimed by the others, then a little longer, then
               SIGCONT. It wakes up holding batches others now own: its commits must be fenced.
               Recovered when its claims were reclaimed; "back" when it commits again.
``redis``      kill -9 redis-server, keep it down for a while, start it on the same data
               directory. Every commit acknowledged before the kill must still be there.
               Recovered when commits resume.
``partition``  take down the link of the consumer that runs in its own network namespace,
               until its heartbeat lapsed and its claims were reclaimed, then bring it up. It
               must reconnect, have its stale commits fenced, and commit again.
``failover``  (``--redis sentinel`` only) kill -9 the primary the Sentinels name; they promote a
               replica, the services follow it; after a while the old primary is started again
               on its data and Sentinel makes it a replica of the new one. Every commit that
               the replicas had acknowledged before the kill must still be there. Recovered
               when commits resume on the new primary; "back" when the old one replicates.
``rqworker``   (``--transport rq`` only, :mod:`chaos.rqview`) SIGKILL one RQ worker process of a
               consumer while it runs a job; the service must put the job back and start
               another worker.
``producer``   SIGKILL the producer while it is still pushing, and after a short delay run the
               same command again (same file, same ``--run-id``): it must resume the run,
               pushing only the batches not pushed yet. Recovered when pushes resume; the
               checker sees any batch pushed twice (a batch in two places).

Each episode checks that it landed (the victim held claims; the claims were reclaimed; the
consumers logged retries while Redis was down) and that the system recovered within a deadline;
an episode that did not recover is a failure of the run.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import redis

from chaos.cluster import Cluster, Generation, Slot
from chaos.episodes import Episode, Outcome
from chaos.netns import Namespaces
from exactsum.cluster import connect
from exactsum.keys import Keys
from exactsum.replication import Replication
from tests.localredis import LocalRedis

log = logging.getLogger("chaos.faults")

T = TypeVar("T")


class FailoverGroup(Protocol):
    """What the failover kind does to a group of Redis nodes that fail over by themselves
    (LocalSentinelGroup; chaos.clusterview's for a Redis Cluster)."""

    def wait_promoted(self, old_port: int, timeout: float) -> int: ...

    def restart(self, node: LocalRedis, timeout: float = 60.0) -> None: ...

    def wait_replica(self, node: LocalRedis, timeout: float) -> None: ...


class Injector(threading.Thread):
    def __init__(self, cluster: Cluster, netns: Namespaces | None, keys: Keys, run_id: str,
                 items: int, episodes: list[Episode], *, ttl: float, reclaim_interval: float,
                 threads: int) -> None:
        super().__init__(name="injector", daemon=True)
        self.cluster, self.netns, self.keys = cluster, netns, keys
        self.run_id, self.items = run_id, items
        self.episodes = episodes
        self.ttl, self.reclaim_interval, self.threads = ttl, reclaim_interval, threads
        self.stopping = threading.Event()
        self.outcomes: list[Outcome] = []
        self.redis_lock = threading.Lock()
        self.producer_lock = threading.Lock()
        # No hidden retries (make_client): a read during a Redis outage fails and is retried
        # here, where its time is seen.
        self.client = connect(cluster.target, socket_timeout=2.0, name="chaos-injector")
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- reading Redis through faults ------------------------------------------------------

    def _read(self, what: Callable[[], T], deadline: float) -> T | None:
        """``what()``, retried while Redis is down or loading; None past the deadline."""
        while True:
            try:
                return what()
            except (redis.RedisError, redis.exceptions.RedisClusterException):
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.1)

    def _poll(self, condition: Callable[[], bool], timeout: float,
              interval: float = 0.05) -> float | None:
        """Seconds until ``condition()`` held, or None if it never did within ``timeout``."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            value = self._read(condition, deadline)
            if value:
                return time.monotonic() - start
            if time.monotonic() > deadline:
                return None
            time.sleep(interval)

    def holds(self, consumer_id: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        for n in range(self.threads):
            pipe.llen(self.keys.inflight(consumer_id, n))
        return sum(int(x) for x in pipe.execute())

    def claims(self, consumer_id: str) -> frozenset[str]:
        """What the consumer holds, to tell later whether it was all taken back (RQ's
        injector names its executions; here the in-flight lists say it by being empty)."""
        return frozenset()

    def released(self, consumer_id: str, claims: frozenset[str]) -> bool:
        """Whether what the consumer held when it went away was taken back from it."""
        return self.holds(consumer_id) == 0

    def alive(self, consumer_id: str) -> bool:
        return bool(self.client.exists(self.keys.heartbeat(consumer_id)))

    def committed_by(self, consumer_id: str) -> int:
        value = self.client.hget(self.keys.run(self.run_id).by_consumer, consumer_id)
        return int(value or 0)

    def committed(self) -> int:
        return int(self.client.get(self.keys.run(self.run_id).committed) or 0)

    def run_finished(self) -> bool:
        try:
            return self.committed() >= self.items
        except redis.RedisError:
            return False

    # -- scheduling ------------------------------------------------------------------------

    def run(self) -> None:
        start = time.monotonic()
        for episode in self.episodes:
            if self.stopping.wait(max(0.0, start + episode.at - time.monotonic())):
                break
            if self.run_finished():
                log.info("the run finished; no more faults")
                break
            outcome = Outcome(episode)
            with self._lock:
                self.outcomes.append(outcome)
            thread = threading.Thread(target=self._execute, args=(outcome,),
                                      name=f"fault-{episode.index}", daemon=True)
            self._threads.append(thread)
            thread.start()
        for thread in self._threads:
            thread.join()

    def _execute(self, outcome: Outcome) -> None:
        kind = outcome.episode.kind
        log.info("fault %s: start", outcome.episode.describe())
        try:
            if kind == "redis":
                with self.redis_lock:
                    self._redis(outcome)
            elif kind == "failover":
                with self.redis_lock:
                    self._failover(outcome)
            elif kind == "producer":
                with self.producer_lock:
                    self._producer(outcome)
            else:
                slot = self._choose(outcome.episode, need_link=kind == "partition")
                if slot is None:
                    outcome.skipped = "no eligible consumer (all others busy with faults)"
                else:
                    fault: Callable[[Outcome, Slot], None] = getattr(self, f"_{kind}")
                    try:
                        fault(outcome, slot)
                    finally:
                        with self.cluster.lock:
                            slot.busy = False
        except Exception as exc:  # a bug of the harness must not leave a process stopped
            log.exception("fault %d crashed", outcome.episode.index)
            outcome.failure = f"harness error: {type(exc).__name__}: {exc}"
        log.info("fault %s", outcome.line())

    def _choose(self, episode: Episode, need_link: bool) -> Slot | None:
        """A consumer not under another fault, keeping at least one other consumer free."""
        deadline = time.monotonic() + 20
        while not self.stopping.is_set():
            with self.cluster.lock:
                free = [s for s in self.cluster.slots
                        if not s.busy and s.current.popen.poll() is None]
                candidates = [s for s in free if s.link is not None or not need_link]
                if candidates and len(free) >= 2:
                    slot = candidates[int(episode.pick * len(candidates))]
                    slot.busy = True
                    return slot
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        return None

    def _wait_holding(self, generation: Generation) -> tuple[int, bool]:
        """Wait (a few seconds at most) until the victim is alive and holds claims.

        Returns what it held and whether its heartbeat was alive: a fault on a consumer whose
        heartbeat had already lapsed (after a long Redis outage, say) would prove nothing.
        """
        held, alive = 0, False

        def ready() -> bool:
            nonlocal held, alive
            held = self.holds(generation.consumer_id)
            alive = self.alive(generation.consumer_id)
            return held > 0 and alive

        self._poll(ready, 10.0)
        return held, alive

    @property
    def reclaim_deadline(self) -> float:
        """Heartbeat TTL, a few reclaim sweeps, and a margin for a loaded machine."""
        return self.ttl + 3 * self.reclaim_interval + 15

    # -- the kinds -------------------------------------------------------------------------

    def _sigkill(self, outcome: Outcome, slot: Slot) -> None:
        gen = slot.current
        outcome.victim = f"{slot.name} {gen.consumer_id}"
        held, alive = self._wait_holding(gen)
        killed = time.monotonic()
        gen.popen.send_signal(signal.SIGKILL)
        gen.popen.wait(timeout=10)
        outcome.notes.append(f"held {held}" + ("" if alive else ", heartbeat already gone"))
        # The replacement starts after the hold while the reclaim is timed, not before.
        replaced: list[str] = []

        def replace() -> None:
            time.sleep(outcome.episode.hold)
            try:
                replaced.append(self.cluster.start_consumer(slot).consumer_id)
            except RuntimeError as exc:
                replaced.append(f"FAILED: {exc}")

        starter = threading.Thread(target=replace, name=f"replace-{slot.index}", daemon=True)
        starter.start()
        gone = self._poll(lambda: self.holds(gen.consumer_id) == 0, self.reclaim_deadline)
        if gone is None:
            outcome.failure = "the dead consumer's claims were not reclaimed"
        else:
            outcome.recover_s = time.monotonic() - killed
            outcome.landed = held > 0 and alive
        starter.join()
        if replaced and replaced[0].startswith("FAILED"):
            outcome.failure = f"the replacement did not start: {replaced[0]}"
        else:
            outcome.notes.append(f"replaced by {replaced[0] if replaced else '?'}")

    def _away(self, outcome: Outcome, slot: Slot, leave: Callable[[], None],
              come_back: Callable[[], None]) -> None:
        """SIGSTOP or partition: away until reclaimed, then back; fenced, then serving."""
        gen = slot.current
        outcome.victim = f"{slot.name} {gen.consumer_id}"
        held, alive = self._wait_holding(gen)
        outcome.notes.append(f"held {held}" + ("" if alive else ", heartbeat already gone"))
        fenced_before = gen.refused()
        retries_before = gen.retries()
        claims = self._read(lambda: self.claims(gen.consumer_id), time.monotonic() + 10)
        left = time.monotonic()
        leave()
        try:
            reclaimed = self._poll(
                lambda: not self.alive(gen.consumer_id)
                and self.released(gen.consumer_id, claims or frozenset()),
                self.reclaim_deadline)
            if reclaimed is None:
                outcome.failure = "its claims were not reclaimed while it was away"
            else:
                outcome.recover_s = time.monotonic() - left
                outcome.landed = held > 0 and alive
            time.sleep(outcome.episode.hold)
        finally:
            come_back()
        returned = time.monotonic()
        base = self._read(lambda: self.committed_by(gen.consumer_id), returned + 30) or 0
        again = self._poll(
            lambda: self.committed_by(gen.consumer_id) > base or self.committed() >= self.items,
            60.0, interval=0.1)
        if gen.popen.poll() is not None:
            outcome.failure = f"it exited with {gen.popen.returncode} after coming back"
        elif again is None:
            outcome.failure = "it did not commit again within 60 s of coming back"
        elif self._read(lambda: self.committed_by(gen.consumer_id) > base, returned + 30):
            outcome.back_s = time.monotonic() - returned
        else:
            outcome.notes.append("the run ended before it committed again")
        time.sleep(1.0)  # let its late commits be refused and counted
        outcome.fenced = gen.refused() - fenced_before
        if outcome.episode.kind == "partition":
            outcome.notes.append(f"{gen.retries() - retries_before} retries")

    def _sigstop(self, outcome: Outcome, slot: Slot) -> None:
        popen = slot.current.popen
        self._away(outcome, slot, lambda: popen.send_signal(signal.SIGSTOP),
                   lambda: popen.send_signal(signal.SIGCONT))

    def _partition(self, outcome: Outcome, slot: Slot) -> None:
        assert self.netns is not None and slot.link is not None
        netns, link = self.netns, slot.link
        self._away(outcome, slot, lambda: netns.set_link(link, up=False),
                   lambda: netns.set_link(link, up=True))

    def _redis(self, outcome: Outcome) -> None:
        server = self.cluster.server
        outcome.victim = f"redis-server pid {server.process.pid if server.process else '?'}"
        gens = [s.current for s in self.cluster.slots]
        retries_before = [g.retries() for g in gens]
        fenced_before = [g.refused() for g in gens]
        acknowledged = self._read(self.committed, time.monotonic() + 10)
        killed = time.monotonic()
        server.kill()
        time.sleep(outcome.episode.hold)
        restarted = time.monotonic()
        server.start(timeout=60)
        outcome.notes.append(f"down {restarted - killed:.1f}s, loaded in "
                             f"{time.monotonic() - restarted:.2f}s")
        after = self._read(self.committed, time.monotonic() + 30)
        if acknowledged is None or after is None:
            outcome.failure = "could not read the committed counter around the restart"
            return
        if after < acknowledged:
            outcome.failure = (f"committed went back from {acknowledged} to {after}: "
                               "acknowledged writes were lost")
            return
        resumed = self._poll(lambda: self.committed() > after or after >= self.items, 60.0)
        if resumed is None:
            outcome.failure = "commits did not resume within 60 s of the restart"
        elif after < self.items:
            outcome.back_s = time.monotonic() - restarted
            outcome.recover_s = time.monotonic() - killed

        def retried() -> int:
            return sum(g.retries() > n for g, n in zip(gens, retries_before, strict=True))

        outcome.landed = self._poll(lambda: retried() > 0, 10.0) is not None
        # A long outage lets every heartbeat lapse: claims are reclaimed as Redis comes back
        # and the owners' commits are refused.
        outcome.fenced = sum(g.refused() - n
                             for g, n in zip(gens, fenced_before, strict=True))
        outcome.notes.append(f"retries by {retried()} of {len(gens)} consumers")

    def acknowledged_counts(self) -> dict[str, int]:
        """The committed count (by partition: one here), once the replicas the services wait
        for have it too: what a failover must not take away (a count read without WAIT may
        include commits that were never acknowledged to their consumer, which a failover may
        legitimately undo)."""
        value = self.committed()
        Replication(self.cluster.min_replicas).barrier(
            self.client, self.keys.run(self.run_id).acks, "chaos_checked_ms")
        return {"": value}

    def committed_counts(self) -> dict[str, int]:
        return {"": self.committed()}

    def resumed_after(self, counts: dict[str, int]) -> bool:
        """Whether commits resumed where the failed primary was (here: anywhere), or the run
        is over."""
        total = sum(counts.values())
        return self.committed() > total or total >= self.items

    def failover_group(self) -> FailoverGroup:
        assert self.cluster.sentinel is not None
        return self.cluster.sentinel

    def kill_primary(self, episode: Episode) -> LocalRedis:
        """kill -9 a primary (the one the Sentinels name); it, stopped."""
        assert self.cluster.sentinel is not None
        return self.cluster.sentinel.kill_primary()

    def _failover(self, outcome: Outcome) -> None:
        group = self.failover_group()
        gens = [s.current for s in self.cluster.slots]
        retries_before = [g.retries() for g in gens]
        fenced_before = [g.refused() for g in gens]
        acknowledged = self._read(self.acknowledged_counts, time.monotonic() + 10)
        victim = self.kill_primary(outcome.episode)
        killed = time.monotonic()
        outcome.victim = f"primary :{victim.port}"
        try:
            new_port = group.wait_promoted(victim.port, timeout=60)
        except TimeoutError as exc:
            outcome.failure = str(exc)
            group.restart(victim)
            return
        outcome.notes.append(f"promoted :{new_port} in {time.monotonic() - killed:.1f}s")
        counts = self._read(self.committed_counts, time.monotonic() + 30)
        after = sum(counts.values()) if counts is not None else None
        # Partition by partition: commits elsewhere must not hide a partition that went back.
        back = {p: (n, (counts or {}).get(p, 0)) for p, n in (acknowledged or {}).items()
                if (counts or {}).get(p, 0) < n}
        if acknowledged is None or counts is None:
            outcome.failure = "could not read the committed counter around the failover"
        elif back:
            outcome.failure = (f"committed went back ({back}, partition: before, after): "
                               "acknowledged writes were lost")
        resumed = None
        if after is not None:
            resumed = self._poll(lambda: self.resumed_after(counts or {}), 60.0,
                                 interval=0.01)
            if resumed is None:
                outcome.failure = outcome.failure or "commits did not resume within 60 s"
            elif after < self.items:
                outcome.recover_s = time.monotonic() - killed
        time.sleep(outcome.episode.hold)
        group.restart(victim)
        try:
            group.wait_replica(victim, timeout=90)
            outcome.back_s = time.monotonic() - killed
        except TimeoutError:
            outcome.failure = outcome.failure or "the old primary did not become a replica"

        def retried() -> int:
            return sum(g.retries() > n for g, n in zip(gens, retries_before, strict=True))

        outcome.landed = self._poll(lambda: retried() > 0, 10.0) is not None
        outcome.fenced = sum(g.refused() - n
                             for g, n in zip(gens, fenced_before, strict=True))
        outcome.notes.append(f"retries by {retried()} of {len(gens)} consumers")
    def pushed(self) -> tuple[int, int]:
        """Batches of the run marked pushed, and planned."""
        rk = self.keys.run(self.run_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.bitcount(rk.pushed)
        pipe.hget(rk.meta, "batches")
        pushed, planned = pipe.execute()
        return int(pushed), int(planned or 0)

    def _producer(self, outcome: Outcome) -> None:
        cluster = self.cluster
        proc = cluster.producer
        counts = self._read(self.pushed, time.monotonic() + 30)
        if proc is None or proc.poll() is not None or counts is None:
            outcome.skipped = "the producer is not running"
            return
        before, planned = counts
        if before >= planned:
            outcome.skipped = "the producer had pushed everything"
            return
        outcome.victim = f"producer pid {proc.pid}"
        with cluster.lock:
            cluster.producer_restarting = True
        try:
            killed = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            at_kill = self._read(lambda: self.pushed()[0], time.monotonic() + 30)
            outcome.notes.append(f"{at_kill} of {planned} batches pushed")
            time.sleep(outcome.episode.hold)
            resumed = cluster.restart_producer()
        finally:
            with cluster.lock:
                cluster.producer_restarting = False
        outcome.notes.append(f"resumed by pid {resumed.pid}")
        if at_kill is None:
            outcome.failure = "could not read the pushed batches after the kill"
            return
        again = self._poll(lambda: self.pushed()[0] > at_kill, 90.0, interval=0.1)
        if again is None:
            outcome.failure = "the resumed producer pushed nothing within 90 s"
            return
        outcome.recover_s = time.monotonic() - killed
        outcome.landed = at_kill < planned

    def finish(self, timeout: float) -> list[Outcome]:
        self.stopping.set()
        self.join(timeout=timeout)
        with self._lock:
            return list(self.outcomes)
