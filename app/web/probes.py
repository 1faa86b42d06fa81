"""Probes of what the web app depends on, each bounded by a deadline.

``/health`` and ``/metrics`` must answer within a second even when Redis or
PostgreSQL accepts connections and never answers.  Each probe therefore runs
in a daemon thread of its own and the caller waits for it only until a
deadline; a probe that misses it is reported as timed out.  A probe that is
still hanging from an earlier request is not started a second time: the
next caller waits for that same attempt, so a hung dependency costs one
stuck thread per probe and process, never one per request.

The broker side (worker nodes, queue sizes) is a :data:`BrokerProbe`, a
callable the composition root (``wsgi.py``) builds from the actors; the
web layer only knows its shape (:class:`BrokerSnapshot`).  The database
probe lives here: ``SELECT 1`` on an engine of its own with short
timeouts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

__all__ = [
    "BrokerSnapshot", "BrokerProbe", "Probe", "ProbeResult", "database_check", "make_probe_engine",
    "describe_error", "secrets_of", "QUEUE_STATES", "PROBE_TIMEOUT_S",
]

T = TypeVar("T")

#: Seconds one probe may take before it is reported as timed out.
PROBE_TIMEOUT_S = 0.8

#: What :meth:`RedisBroker.queue_sizes` counts per queue, in this order.
QUEUE_STATES = ("waiting", "delayed", "inflight", "dead")

#: Seconds libpq waits for a connection; its minimum (a smaller value counts as 2).
_PG_CONNECT_TIMEOUT_S = 2

#: Longest error text shown; the rest is cut.
_MAX_REASON_CHARS = 200

#: ``scheme://user:password@`` in an error text.
_URL_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*:)[^\s@]*@")


@dataclass(frozen=True)
class BrokerSnapshot:
    """What Redis says about the workers, read in one probe.

    Attributes:
      nodes: live worker nodes (the registry's, one per worker invocation).
      queues: per queue (``default``, ``state``) its counts by state
        (``waiting``, ``delayed``, ``inflight``, ``dead``).
    """

    nodes: int
    queues: Mapping[str, Mapping[str, int]]


#: Reads a :class:`BrokerSnapshot` from Redis; raises when Redis fails.
BrokerProbe = Callable[[], BrokerSnapshot]


@dataclass(frozen=True)
class ProbeResult(Generic[T]):
    """A probe's value, or why there is none (``error``, already safe to show)."""

    value: T | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Probe(Generic[T]):
    """Runs ``check`` in a daemon thread, at most one attempt at a time.

    Parameters:
      check: the blocking check; its return value is the probe's value.
      secrets: strings that must never appear in a reported error.
    """

    def __init__(self, check: Callable[[], T], *, secrets: Iterable[str] = ()) -> None:
        self.check = check
        self.secrets = tuple(s for s in secrets if s)
        self._lock = threading.Lock()
        self._pending: Future[T] | None = None

    def start(self) -> Future[T]:
        """The running attempt, or a new one when none runs."""
        with self._lock:
            if self._pending is None or self._pending.done():
                future: Future[T] = Future()
                future.set_running_or_notify_cancel()
                threading.Thread(target=self._run, args=(future,), name="probe", daemon=True).start()
                self._pending = future
            return self._pending

    def _run(self, future: Future[T]) -> None:
        try:
            future.set_result(self.check())
        except BaseException as e:  # noqa: BLE001 - reported to the waiting request, never raised here
            future.set_exception(e)

    def result(self, future: Future[T], timeout_s: float, *, deadline_s: float = PROBE_TIMEOUT_S
               ) -> ProbeResult[T]:
        """Wait up to ``timeout_s`` (what is left of a ``deadline_s`` shared with
        other probes) for ``future``; an error is described safely."""
        try:
            return ProbeResult(value=future.result(timeout=max(0.0, timeout_s)))
        except FutureTimeout:
            return ProbeResult(error=f"timed out after {deadline_s:g} s")
        except Exception as e:
            return ProbeResult(error=describe_error(e, self.secrets))

    def __call__(self, timeout_s: float = PROBE_TIMEOUT_S) -> ProbeResult[T]:
        return self.result(self.start(), timeout_s)


def describe_error(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """A short, safe text for ``error``: no URL credentials, none of ``secrets``.

    A timeout reads ``timed out``; a SQLAlchemy error shows the driver's
    message (not the statement, not the link to SQLAlchemy's docs).
    """
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    if isinstance(error, TimeoutError) or "timeout" in type(error).__name__.lower():
        return "timed out"
    message = " ".join(str(error).split()) or type(error).__name__
    message = _URL_CREDENTIALS.sub(r"\g<head>**@", message)
    for secret in secrets:
        message = message.replace(secret, "**")
    if len(message) > _MAX_REASON_CHARS:
        message = message[: _MAX_REASON_CHARS - 3] + "..."
    return message


def secrets_of(*values: str | None, urls: Iterable[str] = ()) -> list[str]:
    """The secret strings to scrub: ``values`` and the passwords in ``urls``."""
    found = [v for v in values if v]
    for url in urls:
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            found += [password, unquote(password)]
    return found


def make_probe_engine(db_url: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> Engine:
    """An engine for the database probe alone: no pool, short timeouts.

    No pool, so a connection the server stopped answering on is never
    handed to the next probe; a local connect costs a few milliseconds.
    PostgreSQL gets libpq's shortest connect timeout (the statement
    timeout is set by :func:`database_check`); SQLite a short busy timeout.
    """
    if db_url.startswith("sqlite"):
        return create_engine(db_url, poolclass=NullPool, connect_args={"timeout": timeout_s})
    return create_engine(db_url, poolclass=NullPool, connect_args={
        "connect_timeout": _PG_CONNECT_TIMEOUT_S, "application_name": "assistant-health"})


def database_check(engine: Engine, *, timeout_s: float = PROBE_TIMEOUT_S) -> Callable[[], Any]:
    """``SELECT 1`` on ``engine``, as a probe's check.

    On PostgreSQL the statement timeout is set with ``SET LOCAL`` in the
    probe's transaction rather than as a startup option, which PgBouncer
    refuses.
    """
    statement_ms = max(1, int(timeout_s * 1000))

    def check() -> Any:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"SET LOCAL statement_timeout = {statement_ms}"))
            return conn.execute(text("SELECT 1")).scalar()

    return check
