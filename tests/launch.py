"""The one way the tests, chaos, soak, the benchmark and ``make run`` start the services.

It owns what each of them did by hand before: an environment cleaned of the settings the
calling shell may hold (so a stray ``CONSUMER_THREADS`` or ``REDIS_URL`` never changes a
test), the command line, a session of its own for each process (a signal to the session
reaches an RQ consumer's worker processes too), stopping with signals, the producer's JSON
report (the last line of its stdout) and the process' counters (``--counters-file``,
:mod:`exactsum.counters`).

It lives in ``tests/`` beside ``localredis.py``: chaos, bench and scripts/run_local.py run
from a checkout and already import the tests' Redis harness from there; nothing here ships in
the wheel.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from signal import SIGCONT, SIGKILL, SIGTERM
from typing import IO, Any

from exactsum import counters, transport
from exactsum.options import option_fields


def _transport_variables() -> frozenset[str]:
    """The variables of every transport's own options (RQ_QUEUE, ...), as they declare them."""
    return frozenset(spec.env.format(prefix=declared.ENV_PREFIX)
                     for each in transport.registered()
                     for declared in (each.consumer_options, each.producer_options)
                     for _, spec in option_fields(declared))


# The services' settings from the environment: none leaks in from the caller's shell.
SETTING_PREFIXES = ("PRODUCER_", "CONSUMER_", "REDIS_")
SETTING_NAMES = _transport_variables() | {"KEY_PREFIX", "LOG_LEVEL", "LOG_FORMAT", "METRICS_ADDR",
                                          "MIN_REPLICAS", "REPLICA_TIMEOUT", "TRANSPORT"}
# The environment variable of --counters-file, per service module.
COUNTERS_ENV = {"producer_service": "PRODUCER_COUNTERS_FILE",
                "consumer_service": "CONSUMER_COUNTERS_FILE"}


def clean_env(base: Mapping[str, str] | None = None, **settings: str) -> dict[str, str]:
    """``base`` (the process' environment by default) without any service setting, plus
    ``settings``."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(SETTING_PREFIXES) and k not in SETTING_NAMES}
    env.update(settings)
    return env


def parse_report(text: str) -> dict[str, Any] | None:
    """The producer's ``--json`` report: the last line of its stdout; None if there is none
    (it printed nothing, or was killed mid-line)."""
    lines = text.strip().splitlines()
    if not lines:
        return None
    try:
        record = json.loads(lines[-1])
    except ValueError:
        return None
    return dict(record) if isinstance(record, dict) else None


class Launched:
    """One service process started by :func:`launch`, with its output in files."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], stdout_path: Path | None,
                 stderr_path: Path | None, counters_path: Path | None) -> None:
        self.name, self.popen = name, popen
        self.stdout_path, self.stderr_path = stdout_path, stderr_path
        self.counters_path = counters_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout=timeout)

    def signal(self, signum: int) -> None:
        """``signum`` to the process alone (not its session); nothing if it is gone."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signum)

    def signal_session(self, signum: int) -> None:
        """``signum`` to the process and everything it started (RQ worker processes)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def stop(self, timeout: float = 15.0, signum: int = SIGTERM) -> int:
        """``signum`` (after a SIGCONT, in case it is stopped) to the process; SIGKILL to its
        session if it lingers past ``timeout``. Its exit status."""
        if self.popen.poll() is None:
            self.signal(SIGCONT)
            self.signal(signum)
            try:
                return self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int:
        """SIGKILL to the process' session (itself and whatever it started); its status."""
        self.signal_session(SIGKILL)
        self.signal(SIGKILL)
        return self.popen.wait(timeout=10)

    @property
    def stdout(self) -> str:
        return _read(self.stdout_path)

    @property
    def stderr(self) -> str:
        return _read(self.stderr_path)

    def report(self) -> dict[str, Any] | None:
        """The producer's JSON report (:func:`parse_report`)."""
        return parse_report(self.stdout)

    def counters(self) -> dict[str, int]:
        """Its counters now (or at its exit), its RQ worker processes' included."""
        assert self.counters_path is not None, f"{self.name} was launched without counters"
        return counters.read(self.counters_path)

    def counter(self, event: counters.Event) -> int:
        return self.counters()[event.value]


def _read(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def launch(name: str, module: str, args: Sequence[str], env: Mapping[str, str],
           logdir: Path | None, *, stdin: IO[Any] | int | None = None, stdout: bool = True,
           merge_stderr: bool = False, prefix: Sequence[str] = (), counters_file: bool = True,
           ) -> Launched:
    """Start ``python -m module args`` (after ``prefix``, e.g. ``ip netns exec NS``) in a session
    of its own, with ``env`` (see :func:`clean_env`). Its output goes to ``logdir/name.out``
    and ``name.err`` (``merge_stderr``: both into ``name.log``; ``stdout`` False: stdout
    discarded); with ``logdir`` None it shares the caller's terminal. Its counters are kept in
    ``logdir/name.counters.json`` (``counters_file`` False, or no ``logdir``: not kept)."""
    env = dict(env)
    counters_path = None
    if logdir is not None and counters_file and module in COUNTERS_ENV:
        counters_path = logdir / f"{name}.counters.json"
        env[COUNTERS_ENV[module]] = str(counters_path)
    out_path = err_path = None
    with contextlib.ExitStack() as files:
        out: IO[bytes] | int | None = None
        err: IO[bytes] | int | None = None
        if logdir is not None:
            if merge_stderr:
                out_path = err_path = logdir / f"{name}.log"
                out, err = files.enter_context(out_path.open("wb")), subprocess.STDOUT
            else:
                out_path, err_path = logdir / f"{name}.out", logdir / f"{name}.err"
                err = files.enter_context(err_path.open("wb"))
                out = files.enter_context(out_path.open("wb"))
            if not stdout:
                out_path, out = None, subprocess.DEVNULL
        popen = subprocess.Popen(
            [*prefix, sys.executable, "-m", module, *args], env=env,
            stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=out, stderr=err,
            start_new_session=True,
        )
    return Launched(name, popen, out_path, err_path, counters_path)
