"""The processes of a chaos run: redis-server, one producer, and consumer slots.

A slot is a place for one consumer process at a time; when its consumer is SIGKILLed, a
replacement starts in the same slot (a new process with a new consumer id). A slot with a
:class:`~chaos.netns.Link` runs its consumer inside that link's network namespace, reaching
Redis over the veth pair; the other slots share Redis' namespace and use 127.0.0.1.
Every process writes its own log file and counters file (tests/launch.py) in the run's
directory; the fault checks read the counters (exactsum.counters), the logs are for people.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.netns import Link, exec_prefix
from exactsum.connection import RedisTarget
from exactsum.counters import Event
from tests.launch import Launched, clean_env, launch, parse_report
from tests.localredis import LocalRedis
from tests.localsentinel import LocalSentinelGroup


@dataclass
class Generation:
    """One consumer process of a slot."""

    process: Launched
    id_path: Path
    consumer_id: str = ""

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        return self.process.popen

    def log_text(self) -> str:
        return self.process.stdout

    def counter(self, event: Event) -> int:
        return self.process.counter(event)

    def refused(self) -> int:
        """Its commits refused so far: fenced (reclaimed from it) or already counted."""
        counts = self.process.counters()
        return counts[Event.COMMIT_FENCED] + counts[Event.COMMIT_ALREADY_COUNTED]

    def retries(self) -> int:
        """Its Redis commands retried so far (each attempt)."""
        return self.counter(Event.REDIS_RETRY)


@dataclass
class Slot:
    index: int
    link: Link | None
    generations: list[Generation] = field(default_factory=list)
    busy: bool = False  # under a fault episode right now

    @property
    def current(self) -> Generation:
        return self.generations[-1]

    @property
    def name(self) -> str:
        return f"c{self.index}" + ("(netns)" if self.link else "")


class Cluster:
    def __init__(self, workdir: Path, server: LocalRedis, key_prefix: str,
                 consumer_args: list[str], links: list[Link], consumers: int,
                 sentinel: LocalSentinelGroup | None = None, min_replicas: int = 0) -> None:
        self.workdir = workdir
        self.server = server
        # --redis sentinel: the services find the primary through these Sentinels, and every
        # write of theirs waits for min_replicas replicas.
        self.sentinel = sentinel
        self.min_replicas = min_replicas
        self.key_prefix = key_prefix
        self.consumer_args = consumer_args
        self.slots = [Slot(i, links[i] if i < len(links) else None) for i in range(consumers)]
        self.producer: subprocess.Popen[bytes] | None = None
        self.producer_out = workdir / "producer.out"
        self.producer_args: list[str] = []
        self.producers: list[subprocess.Popen[bytes]] = []  # every producer started, in order
        # Set by the producer fault from before its kill until the resumed producer runs: the
        # run is not over when the producer is gone then.
        self.producer_restarting = False
        self.lock = threading.Lock()

    def env(self, url: str) -> dict[str, str]:
        env = clean_env(REDIS_URL=url, KEY_PREFIX=self.key_prefix, LOG_LEVEL="INFO")
        if self.sentinel is not None:
            env.update(REDIS_SENTINELS=self.sentinel.addresses_text,
                       REDIS_SENTINEL_MASTER=self.sentinel.master,
                       MIN_REPLICAS=str(self.min_replicas))
        return env

    @property
    def target(self) -> RedisTarget:
        """Where the harness' own clients find Redis (the primary, after any failover)."""
        url = f"redis://127.0.0.1:{self.server.port}/0"
        if self.sentinel is None:
            return RedisTarget(url)
        return RedisTarget(url, self.sentinel.addresses, self.sentinel.master)

    def url_for(self, slot: Slot) -> str:
        host = slot.link.redis_addr if slot.link else "127.0.0.1"
        return f"redis://{host}:{self.server.port}/0"

    def start_consumer(self, slot: Slot, wait: float = 20.0) -> Generation:
        n = len(slot.generations)
        id_path = self.workdir / f"consumer-{slot.index}-{n}.id"
        prefix = exec_prefix(slot.link.namespace) if slot.link else []
        process = launch(f"consumer-{slot.index}-{n}", "consumer_service",
                         ["--id-file", str(id_path), *self.consumer_args],
                         self.env(self.url_for(slot)), self.workdir, merge_stderr=True,
                         prefix=prefix)
        popen = process.popen
        generation = Generation(process, id_path)
        with self.lock:
            slot.generations.append(generation)
        deadline = time.monotonic() + wait
        while True:
            text = id_path.read_text().strip() if id_path.exists() else ""
            if text:
                generation.consumer_id = text
                return generation
            if popen.poll() is not None:
                raise RuntimeError(f"consumer {slot.name} exited with {popen.returncode}: "
                                   f"{generation.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumer {slot.name} wrote no id within {wait} s")
            time.sleep(0.05)

    def start_producer(self, args: list[str]) -> subprocess.Popen[bytes]:
        self.producer_args = args
        n = len(self.producers)
        # A resumed producer has its own files; the last one's report is the run's.
        process = launch(f"producer-{n}" if n else "producer", "producer_service",
                         ["--json", *args], self.env(f"redis://127.0.0.1:{self.server.port}/0"),
                         self.workdir)
        assert process.stdout_path is not None
        self.producer_out = process.stdout_path
        popen = process.popen
        with self.lock:
            self.producers.append(popen)
            self.producer = popen
        return popen

    def restart_producer(self) -> subprocess.Popen[bytes]:
        """The same command again: the producer resumes the run."""
        return self.start_producer(self.producer_args)

    def producer_running(self) -> bool:
        """A producer runs, or is being restarted after a fault."""
        with self.lock:
            return self.producer_restarting or (
                self.producer is not None and self.producer.poll() is None)

    def producer_report(self) -> dict[str, Any]:
        try:
            return parse_report(self.producer_out.read_text(errors="replace")) or {}
        except OSError:
            return {}

    def consumer_ids(self) -> dict[str, str]:
        """consumer id -> slot name and generation, for every consumer ever started."""
        return {g.consumer_id: f"{s.name}#{i}" for s in self.slots
                for i, g in enumerate(s.generations) if g.consumer_id}

    def stop_consumers(self, grace: float) -> dict[str, int | None]:
        """SIGTERM every live consumer; their exit statuses (None: had to be killed)."""
        live = [(s, s.current) for s in self.slots if s.generations
                and s.current.popen.poll() is None]
        for _, gen in live:
            _signal(gen.popen, signal.SIGCONT)
            _signal(gen.popen, signal.SIGTERM)
        statuses: dict[str, int | None] = {}
        deadline = time.monotonic() + grace + 5
        for slot, gen in live:
            try:
                statuses[slot.name] = gen.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                gen.popen.kill()
                gen.popen.wait(timeout=10)
                statuses[slot.name] = None
        return statuses

    def kill_all(self) -> None:
        """Last resort on the way out: SIGKILL whatever this run started and still runs."""
        procs = [g.popen for s in self.slots for g in s.generations]
        procs += self.producers
        for popen in procs:
            if popen.poll() is None:
                _signal(popen, signal.SIGCONT)
                _signal(popen, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=10)


def _signal(popen: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        popen.send_signal(signum)
