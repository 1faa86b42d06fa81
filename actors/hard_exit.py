"""Leaving a process at once without leaving behind what must not outlive it.

A worker leaves with :func:`os._exit` when it cannot unwind: a thread
blocked in C code cannot be joined (exit 75), and a cold shutdown must not
wait for running tasks.  ``os._exit`` skips ``finally`` blocks, context
managers and :mod:`atexit`, so a pidfile held by the worker command would
stay behind, and the node its service manager restarts would be refused
(``Pidfile ... already exists``, exit 73) for as long as the file names a
live process or, where liveness cannot be told, for good.  Whoever holds
such a thing registers its clean-up here (the worker command, for its
pidfile), and :func:`exit_now` runs it first.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import NoReturn

__all__ = ["registered", "add", "exit_now"]

_cleanups: list[Callable[[], None]] = []


@contextlib.contextmanager
def registered(cleanup: Callable[[], None]) -> Iterator[None]:
    """Run ``cleanup`` before any :func:`exit_now` of this process while the block runs."""
    _cleanups.append(cleanup)
    try:
        yield
    finally:
        if cleanup in _cleanups:
            _cleanups.remove(cleanup)


def add(cleanup: Callable[[], None]) -> None:
    """Run ``cleanup`` before any :func:`exit_now` of this process, for the rest of its life
    (after the clean-ups registered later)."""
    _cleanups.append(cleanup)


def exit_now(code: int) -> NoReturn:
    """Run the registered clean-ups (newest first), flush the logs and leave with ``code``."""
    while _cleanups:
        cleanup = _cleanups.pop()
        try:
            cleanup()
        except Exception:  # one failing clean-up must not keep the process from leaving
            logging.getLogger(__name__).exception("A clean-up before exiting failed.")
    logging.shutdown()
    os._exit(code)
