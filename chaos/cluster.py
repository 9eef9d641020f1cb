"""The processes of a chaos run: redis-server, one producer, and consumer slots.

A slot is a place for one consumer process at a time; when its consumer is SIGKILLed, a
replacement starts in the same slot (a new process with a new consumer id). A slot with a
:class:`~chaos.netns.Link` runs its consumer inside that link's network namespace, reaching
Redis over the veth pair; the other slots share Redis' namespace and use 127.0.0.1.
Every process writes its own log file in the run's directory; the fault checks read them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.netns import Link, exec_prefix
from exactsum.connection import RedisTarget
from tests.localredis import LocalRedis
from tests.localsentinel import LocalSentinelGroup


@dataclass
class Generation:
    """One consumer process of a slot."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    id_path: Path
    consumer_id: str = ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def count(self, *needles: str) -> int:
        text = self.log_text()
        return sum(text.count(n) for n in needles)


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
        self.producer_log = workdir / "producer.log"
        self.producer_args: list[str] = []
        self.producers: list[subprocess.Popen[bytes]] = []  # every producer started, in order
        # Set by the producer fault from before its kill until the resumed producer runs: the
        # run is not over when the producer is gone then.
        self.producer_restarting = False
        self.lock = threading.Lock()

    def env(self, url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PRODUCER_", "CONSUMER_", "REDIS_", "KEY_PREFIX"))}
        env.update(REDIS_URL=url, KEY_PREFIX=self.key_prefix, LOG_LEVEL="INFO")
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
        log_path = self.workdir / f"consumer-{slot.index}-{n}.log"
        id_path = self.workdir / f"consumer-{slot.index}-{n}.id"
        prefix = exec_prefix(slot.link.namespace) if slot.link else []
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                [*prefix, sys.executable, "-m", "consumer_service", "--id-file", str(id_path),
                 *self.consumer_args],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=self.env(self.url_for(slot)),
            )
        generation = Generation(popen, log_path, id_path)
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
        if n:  # a resumed producer: its own files; the last one's report is the run's
            self.producer_out = self.workdir / f"producer-{n}.out"
            self.producer_log = self.workdir / f"producer-{n}.log"
        with self.producer_out.open("wb") as out, self.producer_log.open("wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "producer_service", "--json", *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=self.env(f"redis://127.0.0.1:{self.server.port}/0"),
            )
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
        lines = self.producer_out.read_text(errors="replace").strip().splitlines()
        if not lines:
            return {}
        try:
            return dict(json.loads(lines[-1]))
        except ValueError:
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
