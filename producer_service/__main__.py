import signal
import sys
import threading

# Signal handlers first, before the imports and set-up: as PID 1 in a container (no init),
# a SIGTERM that arrives before Python has a handler is dropped by the kernel.
# The first signal sets stop (a stream's input ends there; any other run is interrupted), a
# second one sets abort (a stream's run is interrupted too).
stop = threading.Event()
abort = threading.Event()
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: abort.set() if stop.is_set() else stop.set())

from producer_service.cli import main  # noqa: E402

sys.exit(main(stop=stop, abort=abort))
