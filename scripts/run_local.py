"""``make run``: a throwaway redis-server, N consumer processes and one producer run.

Prints the producer's verified report and exits with its status. Extra arguments go to the
producer (``make run ARGS="--count 1000000 --batch 1000"``); ``CONSUMERS`` sets how many
consumer processes to start (default 3).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from exactsum.keys import Keys

# The throwaway redis-server is the tests' harness (tests/localredis.py), which is not installed:
# this script runs from the repository, whose root is one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.localredis import LocalRedis


def main(argv: list[str]) -> int:
    consumers = int(os.environ.get("CONSUMERS", "3"))
    with LocalRedis() as server:
        env = {**os.environ, "REDIS_URL": server.url}
        print(f"redis-server on {server.url}; starting {consumers} consumers", file=sys.stderr)
        procs = [
            subprocess.Popen([sys.executable, "-m", "consumer_service"], env=env)
            for _ in range(consumers)
        ]
        try:
            # Like compose's health check: start the run once every consumer has a heartbeat,
            # so that even a short run spreads over all of them.
            client, registry = server.client(), Keys(env.get("KEY_PREFIX", "pc")).consumers
            deadline = time.monotonic() + 30
            while client.zcard(registry) < consumers and time.monotonic() < deadline:
                time.sleep(0.05)
            return subprocess.call([sys.executable, "-m", "producer_service", *argv], env=env)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
