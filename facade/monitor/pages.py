"""The monitor's HTML pages, rendered on the server with Jinja2.

Jinja2 rather than ``string.Template``: pages have loops and
conditionals, and autoescaping matters here, because task arguments,
errors and tracebacks are untrusted text (a customer's message can hold
``<script>``).  No front-end build step: a little plain JavaScript in the
base template sends the actions.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import falcon
import jinja2

from actors import dead_letters, queue_browser, queue_samples, registry
from actors.task_history import clip
from facade.monitor import tasks
from facade.monitor.api import int_param, last_beat_s, queue_name
from facade.monitor.auth import ACTION_HEADER

if TYPE_CHECKING:
    from facade.monitor.app import Sources

__all__ = ["add_routes", "PAGE_SIZE"]

#: Rows per page of the tasks, queue and dead-letter pages.
PAGE_SIZE = 50

_env = jinja2.Environment(loader=jinja2.PackageLoader("facade.monitor", "templates"),
                          autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)


def _when(value: Any) -> str:
    if not isinstance(value, (int, float)) or value <= 0:
        return ""
    return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


_env.filters["when"] = _when
_env.filters["duration"] = _duration


def _chart(samples: list[dict[str, Any]], width: int = 480, height: int = 120) -> dict[str, Any]:
    """Polylines (SVG points) of the waiting/delayed/inflight/dead series."""
    if not samples:
        return {"lines": {}, "width": width, "height": height, "top": 0, "span_s": 0}
    top = max(1, *(int(s.get(k, 0)) for s in samples for k in ("waiting", "delayed", "inflight", "dead")))
    t0, t1 = float(samples[0]["t"]), float(samples[-1]["t"])
    span = max(t1 - t0, 1e-9)
    lines = {}
    for series in ("waiting", "delayed", "inflight", "dead"):
        points = []
        for s in samples:
            x = 0 if len(samples) == 1 else (float(s["t"]) - t0) / span * width
            y = height - int(s.get(series, 0)) / top * height
            points.append(f"{x:.1f},{y:.1f}")
        lines[series] = " ".join(points)
    return {"lines": lines, "width": width, "height": height, "top": top, "span_s": t1 - t0}


class _Page:
    template = ""

    def __init__(self, sources: Sources, prefix: str) -> None:
        self.sources, self.prefix = sources, prefix

    def render(self, req: falcon.Request, resp: falcon.Response, **context: Any) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.set_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                                                   "style-src 'unsafe-inline'; frame-ancestors 'none'")
        resp.set_header("X-Frame-Options", "DENY")
        params = {k: v for k, v in req.params.items() if k != "page" and isinstance(v, str)}

        def request_query(page: int) -> str:
            return urlencode({**params, "page": page})

        resp.text = _env.get_template(self.template).render(prefix=self.prefix, action_header=ACTION_HEADER,
                                                            now=time.time(), request_query=request_query,
                                                            **context)


def _worker_row(node: registry.Node) -> dict[str, Any]:
    info = node.info
    return {"name": node.name, "pool": info.get("pool"), "concurrency": info.get("concurrency"),
            "queues": info.get("queues") or [], "running": len(node.active), "reserved": len(node.reserved),
            "processed": node.total("processed"), "failed": node.total("failed"),
            "succeeded": node.total("succeeded"), "retried": node.total("retried"), "last_beat": last_beat_s(node)}


class WorkersPage(_Page):
    template = "workers.html"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        nodes = registry.live_nodes(self.sources.client)
        queues = [{"name": q, **self.sources.broker.queue_sizes(q)} for q in self.sources.queues]
        self.render(req, resp, title="Workers", workers=[_worker_row(n) for n in nodes], queues=queues)


class WorkerPage(_Page):
    template = "worker.html"

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        node = next((n for n in registry.live_nodes(self.sources.client) if n.name == name), None)
        if node is None:
            raise falcon.HTTPNotFound(title="Not Found", description=f"no live worker {name!r}")
        processes = [{"pid": pid, **{k: p.get(k) for k in ("index", "processed", "failed", "retried", "succeeded",
                                                            "rss_kib", "beat_ms")},
                      "running": len(p.get("active") or [])} for pid, p in sorted(node.processes.items())]
        self.render(req, resp, title=name, worker=_worker_row(node), info=node.info, processes=processes,
                    active=node.active, reserved=node.reserved)


class TasksPage(_Page):
    template = "tasks.html"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        page = int_param(req, "page", 1, minimum=1) or 1
        state = req.get_param("state") or None
        if state and state.upper() not in tasks.STATES:
            raise falcon.HTTPBadRequest(title="Bad Request",
                                        description=f"state must be one of {', '.join(tasks.STATES)}")
        flt = tasks.TaskFilter(state=state, taskname=req.get_param("name") or None,
                               workername=req.get_param("worker") or None, search=req.get_param("search") or None)
        omitted: dict[str, int] = {}
        total, found = tasks.find_tasks(self.sources.client, self.sources.queues, flt,
                                        offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, omitted=omitted)
        self.render(req, resp, title="Tasks", tasks=found, total=total, page=page, omitted=omitted,
                    scan_limit=tasks.QUEUED_SCAN_LIMIT,
                    pages=max(1, math.ceil(total / PAGE_SIZE)), states=tasks.STATES, filters=flt,
                    names=self.sources.registered())


class TaskPage(_Page):
    template = "task.html"

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        found = tasks.task_info(self.sources.client, self.sources.queues, task_id)
        if found is None:
            raise falcon.HTTPNotFound(title="Not Found", description=f"unknown task {task_id!r}")
        self.render(req, resp, title=f"Task {task_id}", task=found)


class BrokerPage(_Page):
    template = "broker.html"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        rows = []
        for q in self.sources.queues:
            stats = queue_samples.queue_stats(self.sources.broker, q)
            rows.append({"name": q, **stats, "chart": _chart(queue_samples.samples(self.sources.client, q))})
        self.render(req, resp, title="Broker", queues=rows)


class QueuePage(_Page):
    template = "queue.html"

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        queue = queue_name(self.sources, name)
        page = int_param(req, "page", 1, minimum=1) or 1
        total, waiting = queue_browser.waiting(self.sources.client, queue, offset=(page - 1) * PAGE_SIZE,
                                               limit=PAGE_SIZE)
        delayed_total, delayed = queue_browser.delayed(self.sources.client, queue, limit=PAGE_SIZE)
        self.render(req, resp, title=f"Queue {queue}", queue=queue, waiting=waiting, total=total, page=page,
                    pages=max(1, math.ceil(total / PAGE_SIZE)), first=(page - 1) * PAGE_SIZE,
                    delayed=delayed, delayed_total=delayed_total)


class DeadPage(_Page):
    template = "dead.html"

    def on_get(self, req: falcon.Request, resp: falcon.Response, queue: str | None = None) -> None:
        names = [queue_name(self.sources, queue)] if queue else list(self.sources.queues)
        page = int_param(req, "page", 1, minimum=1) or 1
        sections = []
        for name in names:
            total, records = dead_letters.page(self.sources.client, name, offset=(page - 1) * PAGE_SIZE,
                                               limit=PAGE_SIZE)
            sections.append({"queue": name, "total": total, "records": [_dead_row(r) for r in records],
                             "pages": max(1, math.ceil(total / PAGE_SIZE))})
        self.render(req, resp, title="Dead letters", sections=sections, page=page, only=queue)


def _dead_row(record: dict[str, Any]) -> dict[str, Any]:
    message = record.get("message") or {}
    return {"id": record.get("message_id"), "task": message.get("actor_name"),
            "args": clip(list(message.get("args") or []), queue_browser.ARG_CHARS),
            "kwargs": clip(dict(message.get("kwargs") or {}), queue_browser.ARG_CHARS),
            "error": record.get("error"), "traceback": record.get("traceback"),
            "failed_at": (record.get("failed_at") or 0) / 1000, "raw": record.get("raw")}


def add_routes(app: falcon.App, sources: Sources, prefix: str) -> None:
    workers = WorkersPage(sources, prefix)
    app.add_route("/", workers)
    app.add_route("/workers", workers)
    app.add_route("/worker/{name}", WorkerPage(sources, prefix))
    app.add_route("/tasks", TasksPage(sources, prefix))
    app.add_route("/task/{task_id}", TaskPage(sources, prefix))
    app.add_route("/broker", BrokerPage(sources, prefix))
    app.add_route("/queue/{name}", QueuePage(sources, prefix))
    dead = DeadPage(sources, prefix)
    app.add_route("/dead", dead)
    app.add_route("/broker/dead/{queue}", dead)
