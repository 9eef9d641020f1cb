"""``make run``: a throwaway redis-server, N consumer processes and one producer run.

Prints the producer's verified report and exits with its status. Extra arguments go to the
producer (``make run ARGS="--count 1000000 --batch 1000"``); ``CONSUMERS`` sets how many
consumer processes to start (default 3). The services share this terminal and take their
other settings from it (``CONSUMER_THREADS=8 make run``): unlike the harnesses, this one does
not clean the environment.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from exactsum.keys import Keys

# The throwaway redis-server and the launcher are the tests' (tests/localredis.py,
# tests/launch.py), which are not installed: this script runs from the repository, whose root
# is one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.launch import launch
from tests.localredis import LocalRedis


def main(argv: list[str]) -> int:
    consumers = int(os.environ.get("CONSUMERS", "3"))
    with LocalRedis() as server:
        env = {**os.environ, "REDIS_URL": server.url}
        print(f"redis-server on {server.url}; starting {consumers} consumers", file=sys.stderr)
        procs = [launch(f"consumer{i}", "consumer_service", [], env, None)
                 for i in range(consumers)]
        try:
            # Like compose's health check: start the run once every consumer has a heartbeat,
            # so that even a short run spreads over all of them.
            client = server.client()
            registry = Keys(env.get("KEY_PREFIX", "pc")).consumers
            deadline = time.monotonic() + 30
            while client.zcard(registry) < consumers and time.monotonic() < deadline:
                time.sleep(0.05)
            producer = launch("producer", "producer_service", argv, env, None, stdin=sys.stdin)
            try:
                return producer.wait()
            except KeyboardInterrupt:
                # Its own session does not see the terminal's Ctrl-C: pass it on, so that it
                # stops as it would (and a second Ctrl-C interrupts its wait for consumers).
                producer.signal(signal.SIGINT)
                try:
                    return producer.wait()
                except KeyboardInterrupt:
                    producer.signal(signal.SIGINT)
                    return producer.wait()
        finally:
            for proc in procs:
                proc.signal(signal.SIGTERM)
            for proc in procs:
                proc.stop(timeout=15)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
