"""``/metrics``: the web app's Prometheus metrics.

Counted in each web process (and summed over gunicorn's workers through
prometheus_client's multiprocess mode, see :mod:`app.web.gunicorn_conf`):

- ``assistant_webhook_requests_total{outcome}``: webhook requests by what
  the webhook made of them (:data:`OUTCOMES`);
- ``assistant_webhook_request_duration_seconds``: their latency;
- ``assistant_tasks_enqueued_total{task}``: tasks the web app sent, by
  runbook name.

Read at scrape time, once per scrape and not per process, by the same
probes as ``/health`` (so within a second both agree; :class:`ProbeCollector`):

- ``assistant_queue_messages{queue,state}``: waiting, delayed, in-flight
  and dead-lettered messages per queue;
- ``assistant_worker_nodes``: live worker nodes in the registry;
- ``assistant_redis_up``: 1 when Redis answered the scrape's probe, else 0
  (and the two above are left out: a scrape never fails for Redis);
- ``assistant_database_up``: 1 when the database answered ``SELECT 1``, else 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import falcon
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from app.health import QUEUE_STATES, BrokerSnapshot
from app.web.probes import Probe, ProbeResult, gather

__all__ = ["MetricsResource", "WebhookMetrics", "ProbeCollector", "count_enqueued", "OUTCOMES",
           "WEBHOOK_REQUESTS", "WEBHOOK_DURATION", "TASKS_ENQUEUED"]

#: What the webhook made of a request (the ``outcome`` label):
#: accepted (something new stored or enqueued), duplicate (only messages
#: already seen), partial (good parts stored, bad parts kept), unreadable
#: (signed but not understood, kept), unsigned (401), too_large (413),
#: unavailable (503: Redis or the queue failed), unconfigured (503: no app
#: secret), verified (handshake answered), verify_refused (handshake
#: refused), bad_request (any other 4xx: a wrong method, a malformed
#: request), error (a 5xx or anything else: a bug).
OUTCOMES = ("accepted", "duplicate", "partial", "unreadable", "unsigned", "too_large", "unavailable",
            "unconfigured", "verified", "verify_refused", "bad_request", "error")

WEBHOOK_REQUESTS = Counter("assistant_webhook_requests", "Webhook requests by outcome.", ["outcome"])
WEBHOOK_DURATION = Histogram("assistant_webhook_request_duration_seconds",
                             "Seconds from a webhook request's arrival to its answer.")
TASKS_ENQUEUED = Counter("assistant_tasks_enqueued", "Tasks the web app enqueued, by runbook task name.", ["task"])
for _name in OUTCOMES:
    WEBHOOK_REQUESTS.labels(_name)  # every outcome shows, at 0, from the start (rate() needs it)

#: The media type of Prometheus's text format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def count_enqueued(enqueue: Callable[..., Any]) -> Callable[..., Any]:
    """``enqueue`` that counts each task it sent (not one it failed to send)."""

    def counted(task_name: str, *args: Any, **kwargs: Any) -> Any:
        result = enqueue(task_name, *args, **kwargs)
        TASKS_ENQUEUED.labels(task_name).inc()
        return result

    return counted


class WebhookMetrics:
    """Falcon middleware: the outcome and latency of each request to ``resource_type``.

    The resource names its outcome in ``req.context.outcome`` when it
    answers 200; an error answer is named by its status.
    """

    def __init__(self, resource_type: type) -> None:
        self.resource_type = resource_type

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started_at = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        if not isinstance(resource, self.resource_type):
            return
        WEBHOOK_DURATION.observe(time.perf_counter() - req.context.started_at)
        WEBHOOK_REQUESTS.labels(_outcome(req, resp)).inc()


def _outcome(req: falcon.Request, resp: falcon.Response) -> str:
    status = resp.status_code
    if req.method == "GET":
        return "verified" if status == 200 else "verify_refused"
    if status == 200:
        return str(req.context.get("outcome") or "accepted")
    if status == 401:
        return "unsigned"
    if status == 413:
        return "too_large"
    if status == 503:
        return "unconfigured" if req.context.get("outcome") == "unconfigured" else "unavailable"
    if 400 <= status < 500:
        return "bad_request"
    return "error"


class ProbeCollector:
    """The Redis and database gauges, read at scrape time by the shared probes.

    Parameters:
      broker: the Redis probe (queue and worker gauges); None leaves them out.
      database: the database probe (``assistant_database_up``); None leaves it out.
    """

    def __init__(self, broker: Probe[BrokerSnapshot] | None, database: Probe[Any] | None = None) -> None:
        self.broker = broker
        self.database = database

    def collect(self) -> Iterator[Metric]:
        # Both start before either is waited for: the scrape's deadline is shared.
        results = iter(gather([p for p in (self.broker, self.database) if p is not None]))
        if self.broker is not None:
            yield from _broker_metrics(next(results))
        if self.database is not None:
            up = GaugeMetricFamily("assistant_database_up", "1 when the database answered this scrape's probe, else 0.")
            up.add_metric([], 1 if next(results).ok else 0)
            yield up


def _broker_metrics(result: ProbeResult[BrokerSnapshot]) -> Iterator[Metric]:
    up = GaugeMetricFamily("assistant_redis_up", "1 when Redis answered this scrape's probe, else 0.")
    snapshot = result.value if result.ok else None
    up.add_metric([], 0 if snapshot is None else 1)
    yield up
    if snapshot is None:
        return
    queues = GaugeMetricFamily("assistant_queue_messages", "Messages per queue and state.",
                               labels=["queue", "state"])
    for queue, sizes in sorted(snapshot.queues.items()):
        for state in QUEUE_STATES:
            queues.add_metric([queue, state], int(sizes.get(state, 0)))
    yield queues
    nodes = GaugeMetricFamily("assistant_worker_nodes", "Live worker nodes in the registry.")
    nodes.add_metric([], snapshot.nodes)
    yield nodes


class _Exposition:
    """What one scrape shows: the counted metrics, then the probed gauges."""

    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


class MetricsResource:
    """``GET /metrics`` in Prometheus's text format.

    Parameters:
      broker: the Redis probe of the queue and worker gauges (None: left out).
      database: the database probe of ``assistant_database_up`` (None: left out).
      multiprocess_dir: prometheus_client's multiprocess directory when
        several processes serve the app (gunicorn); None reads this
        process's own metrics.
    """

    def __init__(self, *, broker: Probe[BrokerSnapshot] | None, database: Probe[Any] | None = None,
                 multiprocess_dir: str | None) -> None:
        self.probes = ProbeCollector(broker, database)
        self.multiprocess_dir = multiprocess_dir

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.multiprocess_dir:
            # A fresh registry per scrape: the collector reads every process's files.
            counted = CollectorRegistry()
            MultiProcessCollector(counted, path=self.multiprocess_dir)
        else:
            counted = REGISTRY
        resp.content_type = CONTENT_TYPE
        resp.cache_control = ["no-store"]
        resp.data = generate_latest(_Exposition(counted, self.probes))  # type: ignore[arg-type]
