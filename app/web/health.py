"""``/health``: whether Redis, the database and at least one worker node answer.

The answer is DESIGN.md's JSON, 200 when all is well and 503 otherwise::

    {"status": "healthy", "redis": "connected", "database": "connected",
     "celery": "1 worker(s) active", "queues": {"default": 0, "state": 0},
     "queue_details": {"default": {"waiting": 0, "delayed": 0, "inflight": 0, "dead": 0}, ...}}

``queues`` holds the waiting messages of each queue (what ``redis-cli LLEN
celery`` and ``LLEN state`` show); ``queue_details`` adds the delayed,
in-flight and dead-lettered ones.  A part that fails is named with a
category only (``"redis": "unavailable: timed out"``, see
:mod:`app.web.probes`), since this port is public; the full reason is
logged when health changes.  When Redis fails, the workers cannot be
counted (``"celery": "unknown: redis unavailable"``) and the queue numbers
are null.  Both probes run at once, together bounded by
:data:`~app.web.probes.PROBE_TIMEOUT_S`, so the answer comes within a
second whatever hangs (given a free gunicorn worker to answer it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import falcon

from app.health import BrokerSnapshot
from app.web.probes import PROBE_TIMEOUT_S, Probe, ProbeResult, gather

__all__ = ["HealthResource"]

logger = logging.getLogger(__name__)


class HealthResource:
    """``GET``/``HEAD /health``.

    Parameters:
      broker: the probe of Redis (worker nodes, queue sizes); None when
        the app runs without the actors (then the workers are unknown and
        the answer is 503).
      database: the probe of the database (``SELECT 1``).
      queues: the queues shown, also when Redis cannot be read (the
        composition root passes the actors' list).
      timeout_s: how long the answer waits for the probes, together.
    """

    def __init__(self, *, broker: Probe[BrokerSnapshot] | None, database: Probe[Any],
                 queues: Sequence[str] = (), timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.broker = broker
        self.database = database
        self.queues = tuple(queues)
        self.timeout_s = timeout_s
        # Logged on a change only: a load balancer asks every few seconds.
        self._last_state: tuple[str, ...] | None = None
        self._status_lock = threading.Lock()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        report, broker, database = self._probe()
        self._log_change(report, broker, database)
        resp.status = falcon.HTTP_200 if report["status"] == "healthy" else falcon.HTTP_503
        resp.cache_control = ["no-store"]
        resp.media = report

    def on_head(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.on_get(req, resp)
        resp.media = None
        resp.content_length = 0

    def report(self) -> dict[str, Any]:
        """The health JSON (see the module docstring)."""
        return self._probe()[0]

    def _probe(self) -> tuple[dict[str, Any], ProbeResult[BrokerSnapshot] | None, ProbeResult[Any]]:
        if self.broker is None:
            [database] = gather([self.database], self.timeout_s)
            broker = None
        else:
            broker, database = gather([self.broker, self.database], self.timeout_s)
        report: dict[str, Any] = {"status": "healthy"}
        snapshot = broker.value if broker is not None and broker.ok else None
        if broker is None:
            report["redis"] = "unknown: not probed (no broker probe configured)"
            report["celery"] = "unknown: not probed"
        elif snapshot is not None:
            report["redis"] = "connected"
            report["celery"] = f"{snapshot.nodes} worker(s) active"
        else:
            report["redis"] = f"unavailable: {broker.error}"
            report["celery"] = "unknown: redis unavailable"
        report["database"] = "connected" if database.ok else f"unavailable: {database.error}"
        names = list(self.queues) + [q for q in (snapshot.queues if snapshot else {}) if q not in self.queues]
        report["queues"] = {q: _count(snapshot, q, "waiting") for q in names}
        report["queue_details"] = {q: (dict(snapshot.queues[q]) if snapshot and q in snapshot.queues else None)
                                   for q in names}
        if not (snapshot is not None and snapshot.nodes > 0 and database.ok):
            report["status"] = "unhealthy"
        # DESIGN's key order: status, redis, database, celery, queues.
        order = ("status", "redis", "database", "celery", "queues", "queue_details")
        return {key: report[key] for key in order}, broker, database

    def _log_change(self, report: dict[str, Any], broker: ProbeResult[Any] | None,
                    database: ProbeResult[Any]) -> None:
        """Log the status, and the full reason of each failing part, when the status
        or a part's category changes (in this process: each gunicorn worker logs its own)."""
        state = (report["status"], report["redis"], report["database"])
        with self._status_lock:
            changed, self._last_state = state != self._last_state, state
        if not changed:
            return
        if report["status"] == "healthy":
            logger.info("Health is healthy: %s.", report["celery"])
            return
        redis_text = report["redis"] if broker is None or broker.ok else f"unavailable: {broker.describe()}"
        database_text = "connected" if database.ok else f"unavailable: {database.describe()}"
        logger.warning("Health is unhealthy: redis %s, database %s, celery %s.", redis_text, database_text,
                       report["celery"])


def _count(snapshot: BrokerSnapshot | None, queue: str, state: str) -> int | None:
    if snapshot is None or queue not in snapshot.queues:
        return None
    return int(snapshot.queues[queue].get(state, 0))
