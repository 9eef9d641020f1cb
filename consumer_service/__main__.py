import signal
import sys
import threading

# Signal handlers first, before the imports and set-up: as PID 1 in a container (no init),
# a SIGTERM that arrives before Python has a handler is dropped by the kernel.
stop = threading.Event()
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: stop.set())

from consumer_service.cli import main  # noqa: E402

sys.exit(main(stop=stop))
