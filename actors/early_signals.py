"""Signals that arrive before a worker is ready to handle them.

A worker writes its pidfile and prints its banner before the supervisor (or
the solo process) installs its own handlers.  A SIGTERM in that window used
to kill the process with the default action, leaving the pidfile behind.
:func:`hold` records such signals; :func:`replay` hands them to the real
handler once it is installed, so an early SIGTERM is a warm shutdown too.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

NAMES = ("SIGTERM", "SIGINT", "SIGBREAK")

_held: list[int] = []


def hold() -> None:
    """Record shutdown signals until :func:`replay` is called (main thread only)."""
    for name in NAMES:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _record)


def replay(handler: Callable[[int, object], None]) -> None:
    """Pass every held signal, in order, to ``handler``; nothing is held after this."""
    while _held:
        handler(_held.pop(0), None)


def pending() -> bool:
    """Whether a shutdown signal is being held."""
    return bool(_held)


def _record(signum: int, frame: object) -> None:
    _held.append(signum)
