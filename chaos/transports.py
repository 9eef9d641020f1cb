"""What chaos needs of a transport besides :class:`exactsum.transport.Transport`: the services'
arguments, the fault kinds it can take, the conservation snapshot and the fault injector.

:class:`TransportView` serves a transport whose batches travel on the native queue; a
transport with queues, faults or records of its own brings a module ``chaos/<name>view.py``
whose ``VIEW`` is a subclass (``chaos/rqview.py``). :func:`view` finds it by name, so that
``chaos.run`` holds no ``if`` on the transport's name.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from chaos.checker import SnapshotFn, take_snapshot
from chaos.episodes import KINDS, SENTINEL_KINDS
from chaos.faults import Injector


class TransportView:
    """The native transport's view (the default)."""

    # The fault kinds that make sense for it, and those under --redis sentinel (empty: none).
    kinds: tuple[str, ...] = KINDS
    sentinel_kinds: tuple[str, ...] = SENTINEL_KINDS
    # The report's words (chaos.report.result_table): what a reclaim moved, what retried a
    # flaky failure, and the script that refuses stale commits.
    reclaimed_words = "elements moved back from dead or absent consumers"
    retried_words = "retry.lua put the batch back on the queue"
    commit_script = "commit.lua"

    def __init__(self, name: str) -> None:
        self.name = name

    def consumer_args(self, args: argparse.Namespace) -> list[str]:
        return ["--transport", self.name]

    def producer_args(self, args: argparse.Namespace) -> list[str]:
        return ["--transport", self.name]

    def snapshot(self, args: argparse.Namespace) -> SnapshotFn:
        return take_snapshot

    def injector(self, args: argparse.Namespace, *injector_args: Any,
                 **injector_kwargs: Any) -> Injector:
        return Injector(*injector_args, **injector_kwargs)


def view(name: str) -> TransportView:
    """The chaos view of transport ``name``: its module's ``VIEW``, else the default."""
    try:
        module = importlib.import_module(f"chaos.{name}view")
    except ModuleNotFoundError as exc:
        if exc.name != f"chaos.{name}view":
            raise
        return TransportView(name)
    found = module.VIEW
    assert isinstance(found, TransportView), f"chaos.{name}view.VIEW is not a TransportView"
    return found
