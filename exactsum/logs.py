"""Logging set-up shared by both services: plain text, or one JSON object per line.

A JSON line carries the service, the run id and the consumer id wherever they are known, and the
thread's name. The consumer id (in a consumer) or the run id (in a producer) is set once for the
process with :func:`set_context`; a consumer's worker names the run of the batch it is handling
with :func:`bind_run`, which holds for that thread until it is bound again.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

_process: dict[str, str | None] = {"run": None, "consumer": None}
_thread = threading.local()


def set_context(*, run: str | None = None, consumer: str | None = None,
                reset: bool = False) -> None:
    """Name the process' run (a producer) or consumer (a consumer) on every log line;
    ``reset`` forgets both first."""
    if reset:
        _process.update(run=None, consumer=None)
    if run is not None:
        _process["run"] = run
    if consumer is not None:
        _process["consumer"] = consumer


def bind_run(run_id: str | None) -> None:
    """Name the run this thread works on from now on (``None``: none in particular)."""
    _thread.run = run_id


def current_run() -> str | None:
    return getattr(_thread, "run", None) or _process["run"]


class ContextFilter(logging.Filter):
    """Adds ``run`` and ``consumer`` to every record that passes the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.run = current_run()
        record.consumer = _process["consumer"]
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, identity: str) -> None:
        super().__init__()
        self.service = service
        self.identity = identity

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "id": self.identity,
            "run": getattr(record, "run", None),
            "consumer": getattr(record, "consumer", None),
            "thread": record.threadName,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str, *, service: str, identity: str) -> None:
    """Log to stderr, so that stdout carries only the producer's report."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service, identity))
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s {service}[{identity}] %(threadName)s: %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
