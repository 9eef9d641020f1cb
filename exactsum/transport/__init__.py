"""The transports, by name: each package here is one (``native``, ``rq``), and its ``TRANSPORT``
implements :class:`~exactsum.transport.base.Transport`. Every package's ``__init__`` is imported
(the services take every transport's options), but a package imports the library it wraps only
in the modules the picked transport uses, so a service on the native transport never imports
RQ."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from exactsum.transport.base import BatchSink, ConsumerContext, ConsumerPool, Transport

__all__ = ["BatchSink", "ConsumerContext", "ConsumerPool", "Transport", "get", "names",
           "registered"]

DEFAULT = "native"


def names() -> list[str]:
    """Every transport there is: the packages beside this module."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)


@cache
def get(name: str) -> Transport:
    if name not in names():
        raise ValueError(f"no transport {name!r}; there are {', '.join(names())}")
    transport = importlib.import_module(f"{__name__}.{name}").TRANSPORT
    if not isinstance(transport, Transport):
        raise TypeError(f"{__name__}.{name}.TRANSPORT is not a Transport")
    return transport


def registered() -> list[Transport]:
    """Every transport, its package imported (for their options: the services take every
    transport's). A package imports the library it wraps only when it is used, so this loads
    no RQ."""
    return [get(name) for name in names()]
