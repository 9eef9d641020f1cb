"""Signal set-up: a handler only sets an Event; the main loop does the stopping."""

from __future__ import annotations

import signal
import threading
from types import FrameType


def stop_on_signals(stop: threading.Event, *signums: signal.Signals) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in signums or (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
