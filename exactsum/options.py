"""Command-line options that can also come from the environment.

Each option names its environment variable; the variable, when set, replaces the default, and a
flag on the command line wins over both. ``--help`` shows the variable beside each option. A bad
value, from either place, ends the program with exit status 2 and a usage message that names the
option or variable and says why.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from exactsum import transport
from exactsum.connection import RedisTarget
from exactsum.keys import Keys
from exactsum.replication import Replication
from exactsum.transport import get as transport_named


def positive_int(text: str) -> int:
    value = int_value(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def non_negative_int(text: str) -> int:
    value = int_value(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def int_value(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


def port(text: str) -> int:
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)")
    return value


def flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (1/0, true/false, yes/no)")


def cluster_value(text: str) -> str:
    """``REDIS_CLUSTER``: a boolean, or the URL of any node of the cluster (which then replaces
    ``REDIS_URL``). Returns "" (no cluster), "1", or the URL."""
    if text.startswith(("redis://", "rediss://")):
        return text
    return "1" if flag(text) else ""


def key_prefix(text: str) -> str:
    if not text or ":" in text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a key prefix is non-empty, without ':' or spaces"
        )
    return text


def sentinel_addresses(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port,...``: the Sentinels to ask where the primary is."""
    found: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        host, sep, port_text = part.rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not host:port (a Sentinel's address, e.g. sentinel-1:26379)")
        found.append((host.strip("[]"), int(port_text)))
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} names no Sentinel (host:port,...)")
    return tuple(found)


def redis_target(args: argparse.Namespace) -> RedisTarget:
    """Where Redis is, from the common options (:meth:`EnvParser.add_common_options`)."""
    return RedisTarget(args.redis_url, args.redis_sentinels or (), args.redis_sentinel_master,
                       args.redis_cluster)


def rq_queue_name(text: str) -> str:
    if not text or any(c in text for c in ":,") or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: an RQ queue name is non-empty, without ':', ',' or spaces"
        )
    return text


class EnvParser(argparse.ArgumentParser):
    """An ArgumentParser whose options may take their default from an environment variable."""

    def add_env_option(
        self,
        *flags: str,
        env: str,
        default: Any,
        type: Callable[[str], Any] = str,
        help: str,
        **kwargs: Any,
    ) -> None:
        raw = os.environ.get(env)
        if raw is not None:
            try:
                default = type(raw)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                self.error(f"environment variable {env}: {exc}")
        shown = "" if default is None else f" (default: {default})"
        self.add_argument(
            *flags, type=type, default=default, help=f"{help}{shown} [env: {env}]", **kwargs
        )

    def add_env_flag(self, flag_name: str, *, env: str, help: str) -> None:
        raw = os.environ.get(env)
        default = False
        if raw is not None:
            try:
                default = flag(raw)
            except argparse.ArgumentTypeError as exc:
                self.error(f"environment variable {env}: {exc}")
        self.add_argument(
            flag_name, action=argparse.BooleanOptionalAction, default=default,
            help=f"{help} [env: {env}]",
        )

    def add_common_options(self) -> None:
        """Options both services share: where Redis is, the key prefix, logging."""
        self.add_env_option(
            "--redis-url", env="REDIS_URL", default="redis://localhost:6379/0",
            help="Redis to use (redis://, rediss:// for TLS, or unix://); credentials come "
            "from REDIS_USERNAME and REDIS_PASSWORD_FILE or REDIS_PASSWORD, or the URL",
        )
        self.add_env_option(
            "--redis-sentinels", env="REDIS_SENTINELS", default=None, type=sentinel_addresses,
            help="host:port,... of Redis Sentinels: ask them where the primary is, and follow "
            "it after a failover (the --redis-url's host and port are then not used; its "
            "scheme, database and credentials are)",
        )
        self.add_env_option(
            "--redis-sentinel-master", env="REDIS_SENTINEL_MASTER", default="mymaster",
            help="the name the Sentinels monitor the primary under (with --redis-sentinels)",
        )
        self.add_env_option(
            "--key-prefix", env="KEY_PREFIX", default=Keys().prefix, type=key_prefix,
            help="prefix of every Redis key",
        )
        self.add_cluster_options()
        self.add_env_option(
            "--log-level", env="LOG_LEVEL", default="INFO",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level",
        )
        self.add_env_option(
            "--log-format", env="LOG_FORMAT", default="text", choices=["text", "json"],
            help="log line format",
        )

    def add_cluster_options(self) -> None:
        """Redis Cluster, and how many replicas must acknowledge a write (docs/cluster.md)."""
        self.add_env_option(
            "--redis-cluster", env="REDIS_CLUSTER", default="", type=cluster_value,
            help="1: --redis-url is a node of a Redis Cluster and runs are sharded over its "
            "primaries (native transport only); a redis:// URL: the same, seeded from that node",
        )
        self.add_env_option(
            "--min-replicas", env="MIN_REPLICAS", default=0, type=non_negative_int,
            help="a write counts only once this many replicas acknowledged it (WAIT after each "
            "write, on a single primary, under Sentinel and on each cluster node); not "
            "acknowledged, it is sent again, so a failover loses no write a service was told "
            "had succeeded (docs/sentinel.md, docs/cluster.md); 0: no WAIT",
        )
        self.add_env_option(
            "--replica-timeout", env="REPLICA_TIMEOUT", default=Replication().timeout_s,
            type=positive_float,
            help="seconds to wait for --min-replicas replicas before sending the write again",
        )

    def check_cluster(self, redis_cluster: str, transport: str) -> None:
        """The transport must be able to run on a Redis Cluster when one is asked for."""
        problem = transport_named(transport).cluster_problem() if redis_cluster else None
        if problem:
            self.error(f"--redis-cluster with --transport {transport}: {problem}")

    def add_transport_options(self) -> None:
        """Which queue carries the batches; the producer and its consumers must agree."""
        self.add_env_option(
            "--transport", env="TRANSPORT", default=transport.DEFAULT, choices=transport.names(),
            help="native: a Redis list and this project's scripts; rq: RQ jobs on an RQ queue, "
            "run by RQ workers (the sum stays exact either way)",
        )
        self.add_env_option(
            "--rq-queue", env="RQ_QUEUE", default="exactsum", type=rq_queue_name,
            help="the RQ queue's name (with --transport rq)",
        )

    def check_transport(self, transport: str, prefix: str) -> None:
        """The transport must be installed, and may allow fewer key prefixes (RQ's job ids carry
        the prefix)."""
        chosen = transport_named(transport)
        missing = chosen.missing()
        if missing:
            self.error(f"--transport {transport}: {missing}")
        problem = chosen.prefix_problem(prefix)
        if problem:
            self.error(f"--key-prefix {prefix!r}: {problem}")

    def add_metrics_options(self, port_env: str) -> None:
        """Where to serve Prometheus metrics (exactsum.metrics); off unless a port is given."""
        self.add_env_option(
            "--metrics-port", env=port_env, default=0, type=port,
            help="serve Prometheus metrics on this port at /metrics (0: off)",
        )
        self.add_env_option(
            "--metrics-addr", env="METRICS_ADDR", default="0.0.0.0",
            help="address the metrics server listens on",
        )
