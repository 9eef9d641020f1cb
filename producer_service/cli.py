"""``python -m producer_service``: parse options, set up logging and signals, run once."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from exactsum import counters
from exactsum.connection import FATAL_ERRORS, RetryAborted
from exactsum.logs import setup_logging
from exactsum.metrics import MetricsServerError
from producer_service.app import EXIT_USAGE, run
from producer_service.settings import parse_settings
from producer_service.source import InputError, Interrupted


def main(argv: Sequence[str] | None = None, stop: threading.Event | None = None,
         abort: threading.Event | None = None) -> int:
    settings = parse_settings(argv)
    setup_logging(settings.log_level, settings.log_format, service="producer",
                  identity=settings.run_id or "-")
    if stop is None:
        stop, abort = threading.Event(), threading.Event()
        first, second = stop, abort

        def on_signal(signum: int, frame: FrameType | None) -> None:
            (second if first.is_set() else first).set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
    try:
        with counters.kept_in(settings.counters_file):
            return run(settings, stop, abort)
    except InputError as exc:
        sys.stderr.write(f"producer: error: {exc}\n")
        return EXIT_USAGE
    except Interrupted as exc:
        sys.stderr.write(f"producer: {exc}\n")
        return 1
    except RetryAborted as exc:
        sys.stderr.write(f"producer: error: {exc}\n")
        return 1
    except MetricsServerError as exc:
        sys.stderr.write(f"producer: error: {exc}\n")
        return EXIT_USAGE
    except FATAL_ERRORS as exc:
        sys.stderr.write(f"producer: error: {type(exc).__name__}: {exc}\n")
        return EXIT_USAGE
