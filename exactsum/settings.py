"""The options the services and tools share, declared once (:mod:`exactsum.options`).

:class:`RedisSettings`: where Redis is, the key prefix and logging; every command that talks to
Redis starts from it (the services, status, the dashboard, the health check, the admin CLI).
:class:`ServiceSettings` adds what the producer and the consumer both take: metrics and the
transport, with the checks that the transport is installed and can run where it is asked to, and
every transport's own options (declared in its package), of which the picked transport gets its
object, ``transport_options``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Self

from exactsum import transport as transports
from exactsum.connection import RedisTarget
from exactsum.keys import Keys
from exactsum.options import (
    Options,
    SettingsError,
    cluster_value,
    key_prefix,
    non_negative_int,
    option,
    port,
    positive_float,
    sentinel_addresses,
    values_of,
)
from exactsum.replication import Replication


@dataclass(frozen=True)
class RedisSettings(Options):
    """Where Redis is, the key prefix, logging."""

    redis_url: str = option(
        "redis://localhost:6379/0", env="REDIS_URL",
        help="Redis to use (redis://, rediss:// for TLS, or unix://); credentials come from "
        "REDIS_USERNAME and REDIS_PASSWORD_FILE or REDIS_PASSWORD, or the URL")
    redis_sentinels: tuple[tuple[str, int], ...] | None = option(
        None, env="REDIS_SENTINELS", type=sentinel_addresses,
        help="host:port,... of Redis Sentinels: ask them where the primary is, and follow it "
        "after a failover (the --redis-url's host and port are then not used; its scheme, "
        "database and credentials are)")
    redis_sentinel_master: str = option(
        "mymaster", env="REDIS_SENTINEL_MASTER",
        help="the name the Sentinels monitor the primary under (with --redis-sentinels)")
    key_prefix: str = option(Keys().prefix, env="KEY_PREFIX", type=key_prefix,
                             help="prefix of every Redis key")
    # Redis Cluster, and how many replicas must acknowledge a write (docs/cluster.md).
    redis_cluster: str = option(
        "", env="REDIS_CLUSTER", type=cluster_value,
        help="1: --redis-url is a node of a Redis Cluster and runs are sharded over its "
        "primaries (native transport only); a redis:// URL: the same, seeded from that node")
    min_replicas: int = option(
        0, env="MIN_REPLICAS", type=non_negative_int,
        help="a write counts only once this many replicas acknowledged it (WAIT after each "
        "write, on a single primary, under Sentinel and on each cluster node); not "
        "acknowledged, it is sent again, so a failover loses no write a service was told had "
        "succeeded (docs/sentinel.md, docs/cluster.md); 0: no WAIT")
    replica_timeout: float = option(
        Replication().timeout_s, env="REPLICA_TIMEOUT", type=positive_float,
        help="seconds to wait for --min-replicas replicas before sending the write again")
    log_level: str = option("INFO", env="LOG_LEVEL", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                            help="log level")
    log_format: str = option("text", env="LOG_FORMAT", choices=["text", "json"],
                             help="log line format")

    def __post_init__(self) -> None:
        if self.redis_cluster and self.redis_sentinels:
            raise SettingsError("--redis-cluster and --redis-sentinels exclude each other (a "
                                "cluster fails over by itself)")

    @property
    def redis(self) -> RedisTarget:
        return RedisTarget(self.redis_url, self.redis_sentinels or (), self.redis_sentinel_master,
                           self.redis_cluster)

    @property
    def replication(self) -> Replication:
        return Replication(self.min_replicas, self.replica_timeout)


@dataclass(frozen=True)
class ServiceSettings(RedisSettings):
    """What the producer and the consumer both take: metrics, and which transport carries the
    batches, with that transport's own options (the producer and its consumers must agree)."""

    # Where to serve Prometheus metrics (exactsum.metrics); off unless a port is given.
    counters_file: str | None = option(
        None, env="{prefix}_COUNTERS_FILE", tail=True,
        help="keep in FILE, as JSON, counts of what happened (retries, fenced commits, "
        "reclaims, ...; docs/counters.md), rewritten within 0.1 s of each and at exit")
    metrics_port: int = option(0, env="{prefix}_METRICS_PORT", type=port, tail=True,
                               help="serve Prometheus metrics on this port at /metrics (0: off)")
    metrics_addr: str = option("0.0.0.0", env="METRICS_ADDR", tail=True,
                               help="address the metrics server listens on")
    transport: str = option(
        transports.DEFAULT, env="TRANSPORT", choices=transports.names(), tail=True,
        help="native: a Redis list and this project's scripts; rq: RQ jobs on an RQ queue, run "
        "by RQ workers (the sum stays exact either way)")
    # The picked transport's own options, an object of its class for this service
    # (own_options): from the command line, or the class's defaults when settings built in
    # code leave them out. Not an option itself: its fields are (more_options).
    transport_options: Options = field(default_factory=Options)

    @classmethod
    def own_options(cls, transport: transports.Transport) -> type[Options]:
        """The class of ``transport``'s own options for this service."""
        raise NotImplementedError(f"{cls.__name__} names no transport options (own_options)")

    @classmethod
    def more_options(cls) -> list[type[Options]]:
        # Every transport's, not only the picked one's: --help lists them all, and --transport
        # is read from the same command line.
        found: list[type[Options]] = []
        for each in transports.registered():
            own = cls.own_options(each)
            if own is not Options and own not in found:
                found.append(own)
        return found

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        # The other transports' options were parsed (and their values checked) but are not
        # kept: a compose file may set RQ_QUEUE for services on either transport.
        own = cls.own_options(transports.get(args.transport))
        return cls(**values_of(cls, args), transport_options=own(**values_of(own, args)))

    def __post_init__(self) -> None:
        super().__post_init__()
        # The transport must be installed, and may allow fewer key prefixes (RQ's job ids carry
        # the prefix).
        chosen = transports.get(self.transport)
        own = self.own_options(chosen)
        if type(self.transport_options) is Options and own is not Options:
            object.__setattr__(self, "transport_options", own())  # frozen: set once, here
        elif type(self.transport_options) is not own:
            raise SettingsError(f"--transport {self.transport} takes {own.__name__}, not "
                                f"{type(self.transport_options).__name__}")
        missing = chosen.missing()
        if missing:
            raise SettingsError(f"--transport {self.transport}: {missing}")
        problem = chosen.prefix_problem(self.key_prefix)
        if problem:
            raise SettingsError(f"--key-prefix {self.key_prefix!r}: {problem}")
        # It must be able to run on a Redis Cluster when one is asked for.
        problem = chosen.cluster_problem() if self.redis_cluster else None
        if problem:
            raise SettingsError(f"--redis-cluster with --transport {self.transport}: {problem}")
