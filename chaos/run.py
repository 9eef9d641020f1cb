"""``python -m chaos``: one chaos run, from the seed to the verdict.

As root with ``ip`` available, the harness makes its namespaces (see :mod:`chaos.netns`),
re-executes itself inside the Redis namespace, and deletes the namespaces when the run ends,
however it ends. Without them it runs on the loopback and skips the partition faults, saying so.

Exit status: 0 when every item was counted exactly once with the harness' own sum, no
conservation violation outlived the reclaim window, every fault kind landed at least once and
every fault episode recovered; 1 otherwise; 2 for bad usage.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, cast

import redis

from chaos import clusterview
from chaos import netns as netns_mod
from chaos.checker import Checker, SnapshotFn, take_snapshot
from chaos.cluster import Cluster
from chaos.episodes import ALL_KINDS, KINDS, RQ_KINDS, KindSummary, Outcome, schedule
from chaos.faults import Injector
from chaos.netns import Namespaces
from chaos.report import ChaosResult, render
from chaos.transports import view
from exactsum import transport
from exactsum.cluster import connect
from exactsum.keys import Keys
from exactsum.replication import Replication
from tests.localcluster import LocalCluster
from tests.localredis import LocalRedis
from tests.localsentinel import LocalSentinelGroup

log = logging.getLogger("chaos")

KEY_PREFIX = "chaos"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Run one producer and several consumers over a file of integers while a "
        "seeded fault injector kills consumers, stops them, kills Redis and cuts a consumer "
        "off the network; check that every item is counted exactly once.")
    p.add_argument("--transport", choices=transport.names(), default=transport.DEFAULT,
                   help="the services' transport: the native list, or RQ jobs (docs/chaos.md)")
    p.add_argument("--rq-queue", default="chaos", help="with --transport rq: the RQ queue")
    p.add_argument("--redis", choices=("single", "sentinel", "cluster"), default="single",
                   help="single: one redis-server, killed and restarted by the 'redis' fault; "
                   "sentinel: a primary, two replicas and three Sentinels, failed over by the "
                   "'failover' fault (docs/sentinel.md); cluster: a Redis Cluster of three "
                   "primaries with a replica each, a primary failed over by the 'failover' "
                   "fault (docs/cluster.md)")
    p.add_argument("--min-replicas", type=int, default=1,
                   help="with --redis sentinel or cluster: the services' --min-replicas")
    p.add_argument("--partitions", type=int, default=6,
                   help="with --redis cluster: the partitions the producer splits the run into")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the input and of the fault schedule (default: random, printed)")
    p.add_argument("--items", type=int, default=2_000_000, help="items to sum")
    p.add_argument("--duration", type=float, default=120.0,
                   help="seconds during which faults are injected")
    p.add_argument("--consumers", type=int, default=4, help="consumer processes")
    p.add_argument("--threads", type=int, default=4, help="worker threads per consumer")
    p.add_argument("--batch", type=int, default=100, help="items per queue element")
    p.add_argument("--max-queue", type=int, default=20_000,
                   help="the producer's queue bound in items (backpressure)")
    p.add_argument("--ttl", type=float, default=2.0, help="consumers' heartbeat TTL, seconds")
    p.add_argument("--reclaim-interval", type=float, default=0.5,
                   help="consumers' reclaim interval, seconds")
    p.add_argument("--block-timeout", type=float, default=0.5,
                   help="consumers' blocking claim timeout, seconds")
    p.add_argument("--work-io-ms", type=float, default=None,
                   help="simulated work per item in ms (default: paced so that the items take "
                   "about --duration to process)")
    p.add_argument("--flaky-rate", type=float, default=0.02,
                   help="share of processing attempts that fail once and are retried "
                   "(retry.lua) on top of the faults; 0 for none")
    p.add_argument("--max-attempts", type=int, default=20,
                   help="consumers' attempts per batch; high, so flaky batches are never "
                   "dead-lettered (with --transport rq: the jobs' RQ retries, plus one)")
    p.add_argument("--kinds", default=None,
                   help=f"fault kinds to inject, comma-separated (default: {','.join(KINDS)}; "
                   f"with --transport rq: {','.join(RQ_KINDS)})")
    p.add_argument("--check-interval", type=float, default=0.5,
                   help="seconds between conservation snapshots")
    p.add_argument("--timeout", type=float, default=None,
                   help="give up on the run after this many seconds (default: 3x --duration "
                   "+ 120)")
    p.add_argument("--no-netns", action="store_true",
                   help="do not use network namespaces (skips the partition faults)")
    p.add_argument("--keep", action="store_true",
                   help="keep the run's directory (logs, Redis data) even when it passes")
    p.add_argument("--json-out", default=None, help="also write the result as JSON to FILE")
    p.add_argument("--inside-spec", default=None, help=argparse.SUPPRESS)
    return p


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt as exc:
        print(f"chaos: interrupted ({exc or 'SIGINT'}); processes stopped, namespaces deleted",
              file=sys.stderr, flush=True)
        return 130


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s chaos %(threadName)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    chaos_view = view(args.transport)
    known = chaos_view.kinds
    if args.redis == "sentinel":
        if not chaos_view.sentinel_kinds:
            build_parser().error(f"--redis sentinel: no faults for --transport {args.transport}")
        known = chaos_view.sentinel_kinds
    if args.redis == "cluster":
        problem = transport.get(args.transport).cluster_problem()
        if problem:  # one line, not the usage: the combination is refused by design
            print(f"chaos: --transport {args.transport} --redis cluster: {problem}",
                  file=sys.stderr)
            return 2
        known = chaos_view.sentinel_kinds  # the same kinds: failovers, no namespaces
    kinds = [k.strip() for k in (args.kinds or ",".join(known)).split(",") if k.strip()]
    unknown = set(kinds) - set(known)
    if unknown or not kinds:
        build_parser().error(f"--kinds: unknown kind(s) {sorted(unknown)}; known: {known}")
    if args.items < args.batch or args.consumers < 2:
        build_parser().error("need at least one batch of items and two consumers")

    if args.inside_spec is not None:
        spec = json.loads(args.inside_spec)
        ns = Namespaces(partitionable=spec["partitionable"], tag=spec["tag"])
        return orchestrate(args, kinds, ns, dict(spec["disabled"]))

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    print(f"chaos: seed {seed} (replay: make chaos SEED={seed}, or python -m chaos --seed "
          f"{seed} with the same options)", flush=True)
    disabled: dict[str, str] = {}
    if args.redis == "sentinel":
        disabled["redis"] = "--redis sentinel (failovers instead)"
        disabled["partition"] = ("--redis sentinel (the Sentinels announce loopback "
                                 "addresses, out of a namespaced consumer's reach)")
    if args.redis == "cluster":
        disabled.update(clusterview.DISABLED)
    reason = "--no-netns" if args.no_netns else netns_mod.unavailable_reason()
    if "partition" in kinds and reason:
        print(f"chaos: partition faults skipped: {reason}", flush=True)
        disabled["partition"] = reason
        kinds.remove("partition")
    if "partition" not in kinds:
        args.seed = seed
        return orchestrate(args, kinds, None, disabled)

    ns = Namespaces(partitionable=1)
    child: subprocess.Popen[bytes] | None = None
    try:
        ns.create()
        spec = json.dumps({"tag": ns.tag, "partitionable": 1, "disabled": disabled})
        inner: list[str] = []
        skip = False
        for word in argv:  # the same options, the seed made explicit
            if skip or word.startswith("--seed="):
                skip = False
            elif word == "--seed":
                skip = True
            else:
                inner.append(word)
        child = subprocess.Popen([*netns_mod.exec_prefix(ns.redis_ns), sys.executable, "-m",
                                  "chaos", *inner, "--seed", str(seed), "--inside-spec", spec])
        return child.wait()
    finally:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)
        ns.teardown()


def write_input(path: Path, items: int, seed: int) -> int:
    """The numbers to sum, one per line; returns their sum (the independent expected sum)."""
    rng = random.Random(seed)
    total = 0
    with path.open("w") as out:
        for start in range(0, items, 100_000):
            values = [rng.randint(-1000, 1_000_000) for _ in range(min(100_000, items - start))]
            total += sum(values)
            out.write("".join(f"{v}\n" for v in values))
    return total


def orchestrate(args: argparse.Namespace, kinds: list[str], ns: Namespaces | None,
                disabled: dict[str, str]) -> int:
    seed: int = args.seed
    duration: float = args.duration
    timeout = args.timeout or 3 * duration + 120
    episodes = schedule(seed, duration, kinds, args.ttl)
    log.info("seed %d: %d fault episodes over %.0f s:\n  %s", seed, len(episodes), duration,
             "\n  ".join(e.describe() for e in episodes))
    workdir = Path(tempfile.mkdtemp(prefix=f"exactsum-chaos-{seed}-"))
    result = ChaosResult(seed, args.transport, args.items, args.batch, args.consumers, duration,
                         redis=args.redis, disabled=disabled, workdir=str(workdir))
    work_io_ms = args.work_io_ms
    if work_io_ms is None:
        # Paced so that processing takes about the fault window without faults: the
        # faults then hit a pipeline in full flow, and the run drains soon after they stop.
        work_io_ms = args.consumers * args.threads * duration * 1000 / args.items
    links = ns.links if ns is not None else []
    bind = " ".join(["127.0.0.1", *(link.redis_addr for link in links)])
    group: LocalSentinelGroup | None = None
    redis_cluster: LocalCluster | None = None
    if args.redis == "cluster":
        redis_cluster = clusterview.start_redis_cluster(workdir)
        server = redis_cluster.nodes[0]
    elif args.redis == "sentinel":
        # Quick failure detection, so that a failover fits in the fault window; a primary
        # without a replica refuses writes rather than take writes a failover would undo.
        group = LocalSentinelGroup(replicas=2, sentinels=3, down_after_ms=1000,
                                   failover_timeout_ms=5000, min_replicas_to_write=1,
                                   work_dir=workdir / "sentinel")
        server = group.nodes[0]
    else:
        server = LocalRedis(data_dir=workdir / "redis",
                            extra_args=["--bind", bind, "--protected-mode", "no"])
        (workdir / "redis").mkdir()
    keys = Keys(KEY_PREFIX)
    run_id = f"chaos-{seed}"
    consumer_args = ["--threads", str(args.threads), "--heartbeat-ttl", str(args.ttl),
                     "--block-timeout", str(args.block_timeout), "--reclaim-interval",
                     str(args.reclaim_interval), "--grace", "5",
                     "--work-io-ms", f"{work_io_ms:.4f}", "--flaky-rate", str(args.flaky_rate),
                     "--max-attempts", str(args.max_attempts)]
    chaos_view = view(args.transport)
    consumer_args += chaos_view.consumer_args(args)
    producer_args = chaos_view.producer_args(args)
    snapshot = chaos_view.snapshot(args)
    min_replicas = args.min_replicas if args.redis != "single" else 0
    cluster = Cluster(workdir, server, KEY_PREFIX, consumer_args, links, args.consumers,
                      sentinel=group, min_replicas=min_replicas)
    make_injector = chaos_view.injector
    if redis_cluster is not None:  # chaos.clusterview: partitions read on their primaries
        cluster = clusterview.ClusterProcesses(
            workdir, server, KEY_PREFIX, consumer_args, links, args.consumers,
            min_replicas=min_replicas, redis_cluster=redis_cluster, partitions=args.partitions)
        snapshot = clusterview.cluster_snapshot(min_replicas)

        def make_injector(args: argparse.Namespace, *a: Any, **kw: Any) -> Injector:
            return clusterview.ClusterInjector(*a, **kw)
    started = time.monotonic()
    injector: Injector | None = None
    checker: Checker | None = None
    outcomes: list[Outcome] = []
    try:
        input_path = workdir / "numbers.txt"
        result.expected_sum = write_input(input_path, args.items, seed)
        log.info("input: %d items, sum %d, in %s; work %.3f ms per item", args.items,
                 result.expected_sum, input_path, work_io_ms)
        if group is not None:
            group.start()
        elif redis_cluster is None:
            server.start()
        client = connect(cluster.target, socket_timeout=5.0, name="chaos-checker")
        for slot in cluster.slots:
            cluster.start_consumer(slot)
        checker = Checker(client, keys, [run_id], interval=args.check_interval,
                          window=args.ttl + args.reclaim_interval + 3.0, snapshot=snapshot,
                          settle=functools.partial(Replication(min_replicas).barrier, client,
                                                   keys.run(run_id).acks, "chaos_checked_ms")
                          if min_replicas and redis_cluster is None else None)
        checker.start()
        producer = cluster.start_producer([
            "--input", str(input_path), "--batch", str(args.batch), "--max-queue",
            str(args.max_queue), "--run-id", run_id, "--timeout", str(timeout),
            "--progress-interval", "10", *producer_args])
        injector = make_injector(
            args, cluster, ns, keys, run_id, args.items, episodes, ttl=args.ttl,
            reclaim_interval=args.reclaim_interval, threads=args.threads)
        injector.start()
        while cluster.producer_running():  # a producer fault restarts it: the same run
            if time.monotonic() - started > timeout + 30:
                result.failures.append(f"the producer did not finish within {timeout:.0f} s")
                injector.stopping.set()
                with cluster.lock:
                    cluster.producer_restarting = False
                if cluster.producer is not None:
                    cluster.producer.kill()
                break
            time.sleep(0.5)
        producer = cluster.producer or producer
        result.producer_status = producer.wait(timeout=30)
        outcomes = injector.finish(timeout=180)
        final = checker.sample()
        checker_report = checker.finish()
        result.checker = checker_report
        result.elapsed_s = time.monotonic() - started
        result.consumer_exits = cluster.stop_consumers(grace=5)
        judge(result, cluster, client, keys, run_id, kinds, outcomes, final is not None,
              snapshot)
    except KeyboardInterrupt:
        log.error("interrupted; logs and Redis data are in %s", workdir)
        if injector is not None:
            injector.finish(timeout=5)
        raise
    finally:
        if checker is not None:
            checker.stopping.set()
        cluster.kill_all()
        if group is not None:
            group.kill_all()
            group.close()
        elif redis_cluster is not None:
            redis_cluster.close()
        else:
            server.stop()
    text = render(result, outcomes)
    print(text, flush=True)
    (workdir / "report.md").write_text(text + "\n")
    if args.json_out:
        Path(args.json_out).write_text(result.as_json() + "\n")
    print(result.as_json(), flush=True)
    if result.passed and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"chaos: logs, Redis data and the report are in {workdir}", flush=True)
    return 0 if result.passed else 1


def judge(result: ChaosResult, cluster: Cluster, client: redis.Redis, keys: Keys, run_id: str,
          kinds: list[str], outcomes: list[Outcome], sampled: bool,
          snapshot: SnapshotFn = take_snapshot) -> None:
    """The verdict, from the harness' own figures and Redis' records, never from one alone."""
    fail = result.failures.append
    report = cluster.producer_report()
    result.producer_exact = bool(report.get("exact"))
    if result.producer_status != 0 or not result.producer_exact:
        fail(f"producer exited {result.producer_status}: {report.get('verdict', 'no report')}")
    result.producer_attempts = len(cluster.producers)
    if report and report.get("epoch") != len(cluster.producers):
        fail(f"the last producer worked at epoch {report.get('epoch')}, but "
             f"{len(cluster.producers)} producers were started")
    if report and (report.get("sum") != result.expected_sum
                   or report.get("produced") != result.items):
        fail(f"producer reports {report.get('produced')} items summing to {report.get('sum')}; "
             f"the harness wrote {result.items} summing to {result.expected_sum}")

    snap = snapshot(client, keys, [run_id])
    state = snap.runs[run_id]
    rk = keys.run(run_id)
    result.sum, result.committed = state.sum, state.committed
    result.dead_lettered = state.dead_items
    result.reclaimed = snap.reclaimed
    if snap.unread:
        fail(f"partitions {list(snap.unread)} could not be read at the end")
    # On a cluster the run's counters are in each partition (state.parts): add them up.
    parts = [keys.partition(tag).run(run_id) for tag in state.parts] or [rk]
    result.stale_commits = sum(int(cast(bytes, client.get(p.stale) or 0)) for p in parts)
    result.retried = sum(int(a) for p in parts for a in cast(list[bytes], client.hvals(p.attempts)))
    by_consumer: Counter[str] = Counter()
    for p in parts:
        raw = cast(dict[bytes, bytes], client.hgetall(p.by_consumer))
        by_consumer.update({k.decode(): int(v) for k, v in raw.items()})
    assert state.plan is not None
    batches = state.plan.batches
    # Item ids are (batch, position): a batch counted once counts each of its items once.
    result.lost = result.items - state.done_items
    result.duplicated = state.committed + state.dead_items - state.done_items
    if state.sum != result.expected_sum:
        fail(f"sum {state.sum} != expected {result.expected_sum}")
    if state.committed != result.items or result.lost or result.duplicated:
        fail(f"committed {state.committed}, lost {result.lost}, duplicated {result.duplicated}")
    if len(state.done) != batches or len(state.pushed) != batches:
        fail(f"{len(state.done)} batches done and {len(state.pushed)} pushed of {batches}")
    if state.waiting != "queue" and state.queue:
        fail(f"{len(state.queue)} batches still unresolved at the end")
    elif state.queue or state.inflight:
        fail(f"{sum(state.queue.values())} elements still queued and "
             f"{sum(state.inflight.values())} in flight at the end")
    if sum(by_consumer.values()) != state.committed:
        fail(f"per-consumer counts add up to {sum(by_consumer.values())}, "
             f"not {state.committed}")
    unknown = set(by_consumer) - set(cluster.consumer_ids())
    if unknown:
        fail(f"commits by consumers this run never started: {sorted(unknown)}")
    if state.dead_items:
        fail(f"{state.dead_items} items dead-lettered")

    c = result.checker
    if not sampled:
        fail("the checker could not take its final snapshot")
    if c.persistent:
        fail(f"conservation violated past the reclaim window: {c.persistent[:3]}")
    if any(e.startswith("still open") for e in c.examples):
        fail("a conservation violation was still open at the end")
    if c.samples < 10:
        fail(f"only {c.samples} conservation samples")

    for o in outcomes:
        if o.failure:
            fail(f"fault #{o.episode.index} {o.episode.kind}: {o.failure}")
    result.kinds = [KindSummary.of(k, outcomes) for k in ALL_KINDS if k in kinds]
    for k in result.kinds:
        if k.landed == 0:
            fail(f"no {k.kind} fault landed ({k.injected} injected, {k.skipped} skipped)")
    for name, status in result.consumer_exits.items():
        if status != 0:
            fail(f"consumer {name} exited {status} on SIGTERM at the end")
    result.refusals_logged = sum(g.refused() for s in cluster.slots for g in s.generations)


if __name__ == "__main__":
    sys.exit(main())
