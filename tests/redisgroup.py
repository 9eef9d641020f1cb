"""What the throwaway multi-process setups share (a Redis Cluster, a Sentinel group): several
``redis-server`` processes in a temporary directory of their own, started together and all
stopped on exit, even when starting them failed half-way."""

from __future__ import annotations

import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Self

import redis

from tests.localredis import LocalRedis


class RedisGroup(ABC):
    """``nodes`` in ``work_dir`` (a new temporary one, removed on close, unless given)."""

    def __init__(self, prefix: str, work_dir: Path | None = None) -> None:
        self._own_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix=prefix))
        self.nodes: list[LocalRedis] = []

    def node_dir(self, name: str) -> Path:
        """A data directory of its own for one node, so that it can restart on its data."""
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @abstractmethod
    def start(self, timeout: float = 60.0) -> None:
        """Start every process and wait until the group is ready."""

    def stop_others(self) -> None:  # noqa: B027 (a hook; a Cluster has nothing but nodes)
        """Stop the group's processes that are not nodes (Sentinels), before the nodes."""

    def close(self) -> None:
        self.stop_others()
        for node in self.nodes:
            node.stop()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    @staticmethod
    def until(predicate: Callable[[], object], deadline: float, what: str) -> None:
        """Poll ``predicate`` until it is true; an error from Redis counts as not yet (a node
        may still be starting, or down on purpose)."""
        while True:
            try:
                if predicate():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
