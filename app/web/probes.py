"""Probes of what the web app depends on: bounded, shared, cached and safe to show.

``/health`` and ``/metrics`` must answer within a second even when Redis or
PostgreSQL accepts connections and never answers, and a load balancer or
scraper asking often must not become load on them.  So a :class:`Probe`:

- runs its check in a daemon thread and the caller waits only until a
  deadline (:data:`PROBE_TIMEOUT_S`); a missed deadline reads ``timed out``;
- runs one attempt at a time: requests arriving while one runs wait for
  that same attempt (single flight), so a hung dependency costs one stuck
  thread, not one per request;
- keeps a finished result for :data:`RESULT_TTL_S`, so ``/health`` and
  ``/metrics`` asked together agree and open one connection between them;
- abandons an attempt older than :data:`ABANDON_AFTER_S` and starts a new
  one.  Nothing bounds a query on a connection that stalled after it was
  made (PostgreSQL's ``statement_timeout`` is enforced by the server, which
  may never see the query), so without this one hung attempt would keep
  the probe failing after the dependency came back.  At most
  :data:`MAX_ABANDONED` abandoned threads are kept per probe; above that
  the probe reads ``still hung`` and starts none.

A failure is shown to the public port as a category only (:data:`TIMED_OUT`,
:data:`REFUSED`, :data:`AUTH_FAILED`, :data:`ERROR`, :data:`STILL_HUNG`):
error texts name hosts, addresses and users.  The full text, with URL
passwords and configured secrets masked, is kept in ``detail`` for the log.

The broker side (worker nodes, queue sizes) is an :data:`app.health.BrokerProbe`
the composition root (``wsgi.py``) builds from the actors.  The database
check lives here: ``SELECT 1`` on an engine of its own with short timeouts.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from app.config import mask_url, url_passwords

__all__ = [
    "Probe", "ProbeResult", "database_check", "make_probe_engine", "describe_error", "classify_error",
    "secrets_of", "gather", "PROBE_TIMEOUT_S", "RESULT_TTL_S", "ABANDON_AFTER_S", "MAX_ABANDONED",
    "TIMED_OUT", "REFUSED", "AUTH_FAILED", "ERROR", "STILL_HUNG",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds one answer waits for its probes before reporting them timed out.
PROBE_TIMEOUT_S = 0.8

#: Seconds a finished probe result is reused.
RESULT_TTL_S = 1.0

#: Seconds after which a probe attempt that has not finished is abandoned.
ABANDON_AFTER_S = 5.0

#: Abandoned, still running attempts kept per probe before it stops starting new ones.
MAX_ABANDONED = 2

#: The public failure categories.
TIMED_OUT = "timed out"
REFUSED = "refused"
AUTH_FAILED = "authentication failed"
ERROR = "error"
STILL_HUNG = "still hung"

#: Seconds libpq waits for a connection; its minimum (a smaller value counts as 2).
_PG_CONNECT_TIMEOUT_S = 2

#: libpq's TCP settings for the probe: a peer gone silent is noticed in about
#: 3 s (keepalives every second, 2 missed) and unacknowledged data in 2 s.
_PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 1, "keepalives_interval": 1, "keepalives_count": 2,
                  "tcp_user_timeout": 2000}

#: Longest error text logged; the rest is cut.
_MAX_DETAIL_CHARS = 300

#: A URL in an error text (masked with :func:`app.config.mask_url`).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")

#: PostgreSQL's SQLSTATE for a statement cancelled by ``statement_timeout``.
_QUERY_CANCELED = "57014"


@dataclass(frozen=True)
class ProbeResult(Generic[T]):
    """A probe's value, or why there is none.

    Attributes:
      value: what the check returned.
      error: None on success, else a public category (:data:`TIMED_OUT`, ...).
      detail: the failure's full text, masked, for the log (never for HTTP).
    """

    value: T | None = None
    error: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        """``category (detail)`` for a log line."""
        if self.ok:
            return "ok"
        return f"{self.error} ({self.detail})" if self.detail else str(self.error)


def _done(result: ProbeResult[T]) -> Future[ProbeResult[T]]:
    future: Future[ProbeResult[T]] = Future()
    future.set_result(result)
    return future


class Probe(Generic[T]):
    """Runs ``check`` in a daemon thread: single flight, cached, abandoned when hung.

    Parameters:
      check: the blocking check; its return value is the probe's value.
      name: what the probe checks (``redis``, ``database``), for logs and thread names.
      secrets: strings that must never appear in a reported error.
      ttl_s: seconds a finished result is reused.
      abandon_after_s: seconds after which an unfinished attempt is abandoned.
      max_abandoned: abandoned attempts still running kept at most.
      clock: monotonic seconds (injected by tests).
    """

    def __init__(self, check: Callable[[], T], *, name: str, secrets: Iterable[str] = (),
                 ttl_s: float = RESULT_TTL_S, abandon_after_s: float = ABANDON_AFTER_S,
                 max_abandoned: int = MAX_ABANDONED, clock: Callable[[], float] = time.monotonic) -> None:
        self.check = check
        self.name = name
        self.secrets = tuple(s for s in secrets if s)
        self.ttl_s = ttl_s
        self.abandon_after_s = abandon_after_s
        self.max_abandoned = max_abandoned
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: Future[ProbeResult[T]] | None = None
        self._started_at = 0.0
        self._abandoned: list[Future[ProbeResult[T]]] = []
        self._cached: ProbeResult[T] | None = None
        self._cached_at = 0.0

    def start(self) -> Future[ProbeResult[T]]:
        """A fresh cached result, the running attempt, or a new attempt."""
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached_at < self.ttl_s:
                return _done(self._cached)
            pending = self._pending
            if pending is not None and not pending.done():
                if now - self._started_at < self.abandon_after_s:
                    return pending
                self._abandoned = [f for f in self._abandoned if not f.done()]
                if len(self._abandoned) >= self.max_abandoned:
                    unfinished = len(self._abandoned) + 1
                    return _done(ProbeResult(error=STILL_HUNG, detail=(
                        f"{unfinished} attempts unfinished, the newest for {now - self._started_at:.0f} s")))
                logger.warning("The %s probe is abandoning an attempt unfinished after %.0f s and starting a new one.",
                               self.name, now - self._started_at)
                self._abandoned.append(pending)
            future: Future[ProbeResult[T]] = Future()
            future.set_running_or_notify_cancel()
            self._pending, self._started_at = future, now
            threading.Thread(target=self._run, args=(future,), name=f"probe-{self.name}", daemon=True).start()
            return future

    def _run(self, future: Future[ProbeResult[T]]) -> None:
        try:
            result: ProbeResult[T] = ProbeResult(value=self.check())
        except BaseException as e:  # noqa: BLE001 - reported to the waiting requests, never raised here
            result = ProbeResult(error=classify_error(e), detail=describe_error(e, self.secrets))
        with self._lock:
            # An abandoned attempt's late answer is older than what the current one will say.
            if future is self._pending:
                self._cached, self._cached_at = result, self._clock()
        future.set_result(result)

    def result(self, attempt: Future[ProbeResult[T]], timeout_s: float) -> ProbeResult[T]:
        """Wait up to ``timeout_s`` for ``attempt``; past it the probe reads ``timed out``."""
        try:
            return attempt.result(timeout=max(0.0, timeout_s))
        except FutureTimeout:
            return ProbeResult(error=TIMED_OUT, detail="no answer before the deadline")

    def __call__(self, timeout_s: float = PROBE_TIMEOUT_S) -> ProbeResult[T]:
        return self.result(self.start(), timeout_s)


def gather(probes: Sequence[Probe[Any]], timeout_s: float = PROBE_TIMEOUT_S) -> list[ProbeResult[Any]]:
    """The results of ``probes``, all started before any is waited for: they share one deadline."""
    deadline = time.monotonic() + timeout_s
    attempts = [probe.start() for probe in probes]
    return [probe.result(attempt, deadline - time.monotonic()) for probe, attempt in zip(probes, attempts, strict=True)]


def classify_error(error: BaseException) -> str:
    """The public category of ``error``: timed out, refused, authentication failed or error."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    name = type(error).__name__.lower()
    message = str(error).lower()
    sqlstate = str(getattr(error, "sqlstate", None) or "")
    if (isinstance(error, TimeoutError) or "timeout" in name or sqlstate == _QUERY_CANCELED
            or "timeout expired" in message or "timed out" in message):
        return TIMED_OUT
    if ("authentication" in name or sqlstate.startswith("28") or "authentication failed" in message
            or "wrongpass" in message or "invalid username-password" in message):
        return AUTH_FAILED
    if isinstance(error, ConnectionRefusedError) or "refused" in message:
        return REFUSED
    return ERROR


def describe_error(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """The full text of ``error`` for the log: URLs masked, no ``secrets``, cut short.

    A SQLAlchemy error shows the driver's message (not the statement, not
    the link to SQLAlchemy's docs).
    """
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    message = " ".join(str(error).split()) or type(error).__name__
    message = _URL.sub(lambda m: mask_url(m.group(0)), message)
    for secret in secrets:
        message = message.replace(secret, "**")
    if len(message) > _MAX_DETAIL_CHARS:
        message = message[: _MAX_DETAIL_CHARS - 3] + "..."
    return message


def secrets_of(*values: str | None, urls: Iterable[str] = ()) -> list[str]:
    """The secret strings to scrub: ``values`` and the passwords in ``urls``."""
    return [v for v in values if v] + [p for url in urls for p in url_passwords(url)]


def make_probe_engine(db_url: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> Engine:
    """An engine for the database probe alone: no pool, short timeouts, TCP keepalives.

    No pool, so a connection the server stopped answering on is never
    handed to the next probe; a local connect costs a few milliseconds.
    PostgreSQL gets libpq's shortest connect timeout and keepalives (the
    statement timeout is set by :func:`database_check`); SQLite a short
    busy timeout.
    """
    if db_url.startswith("sqlite"):
        return create_engine(db_url, poolclass=NullPool, connect_args={"timeout": timeout_s})
    return create_engine(db_url, poolclass=NullPool, connect_args={
        "connect_timeout": _PG_CONNECT_TIMEOUT_S, "application_name": "assistant-health", **_PG_KEEPALIVES})


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
