"""``python -m consumer_service``: parse options, set up logging and signals, serve until told."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence

from consumer_service.service import ConsumerService, new_consumer_id
from consumer_service.settings import parse_settings
from exactsum import counters
from exactsum.connection import FATAL_ERRORS
from exactsum.logs import set_context, setup_logging
from exactsum.metrics import MetricsServerError
from exactsum.signals import stop_on_signals


def main(argv: Sequence[str] | None = None, stop: threading.Event | None = None) -> int:
    settings = parse_settings(argv)
    if stop is None:
        stop = threading.Event()
        stop_on_signals(stop, signal.SIGTERM, signal.SIGINT)
    try:
        consumer_id = new_consumer_id()
        setup_logging(settings.log_level, settings.log_format, service="consumer",
                      identity=consumer_id)
        set_context(consumer=consumer_id)
        with counters.kept_in(settings.counters_file):
            return ConsumerService(settings, consumer_id).serve(stop)
    except MetricsServerError as exc:
        sys.stderr.write(f"consumer: error: {exc}\n")
        return 2
    except FATAL_ERRORS as exc:
        sys.stderr.write(f"consumer: error: {type(exc).__name__}: {exc}\n")
        return 2
