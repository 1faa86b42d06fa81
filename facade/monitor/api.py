"""Flower's HTTP API shapes, the health check and the dead-letter actions (JSON)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon

from actors import keys, registry
from actors.dead_letters import DeadLetterNotFound
from facade import replies
from facade.monitor import tasks

if TYPE_CHECKING:
    from facade.monitor.app import Sources

__all__ = ["add_routes", "worker_entry", "last_beat_s", "queue_name", "int_param"]


def int_param(req: falcon.Request, name: str, default: int | None, *, minimum: int = 0,
              maximum: int | None = None) -> int | None:
    """An integer query parameter; 400 with the reason when it is not one, or out of range."""
    raw = req.get_param(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise falcon.HTTPBadRequest(title="Bad Request", description=f"{name} must be a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise falcon.HTTPBadRequest(title="Bad Request", description=f"{name} must be at least {minimum}{upper}")
    return value


def queue_name(sources: Sources, name: str) -> str:
    """The canonical name of a monitored queue; 404 for any other."""
    canonical = keys.canonical_queue(name)
    if canonical not in sources.queues:
        raise falcon.HTTPNotFound(title="Not Found", description=f"unknown queue {name!r}")
    return canonical


def last_beat_s(node: registry.Node) -> float | None:
    """When the node's processes last beat, in seconds since the epoch."""
    beats = [float(p.get("beat_ms") or 0) for p in node.processes.values()]
    return max(beats) / 1000 if beats and max(beats) > 0 else None


def worker_entry(node: registry.Node) -> dict[str, Any]:
    """One worker of ``/api/workers``: Flower's keys from the registry (no inspect broadcast)."""
    info = node.info
    conf = {k: info.get(k) for k in ("pool", "concurrency", "queues", "time_limit", "soft_time_limit",
                                     "max_tasks_per_child", "max_memory_per_child", "prefetch_count")}
    return {
        "active_queues": replies.active_queues(node),
        "conf": conf,
        "registered": replies.registered(node),
        "stats": replies.stats(node),
        "active": replies.active(node),
        "reserved": replies.reserved(node),
        "scheduled": [],
        "revoked": [],
        "timestamp": last_beat_s(node),
    }


class Workers:
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        nodes = registry.live_nodes(self.sources.client)
        wanted = req.get_param("workername")
        if wanted:
            nodes = [n for n in nodes if n.name == wanted]
            if not nodes:
                raise falcon.HTTPNotFound(title="Not Found", description=f"unknown worker {wanted!r}")
        if req.get_param_as_bool("status", default=False):
            resp.media = {n.name: True for n in nodes}
            return
        resp.media = {n.name: worker_entry(n) for n in nodes}


class TaskList:
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = int_param(req, "limit", tasks.MAX_PAGE, minimum=1, maximum=tasks.MAX_PAGE) or tasks.MAX_PAGE
        offset = int_param(req, "offset", 0) or 0
        sort_by = req.get_param("sort_by")
        if sort_by and sort_by.lstrip("-") not in tasks.FLOWER_KEYS:
            raise falcon.HTTPBadRequest(title="Bad Request", description=f"cannot sort by {sort_by!r}")
        for unsupported in ("received_start", "received_end", "started_start", "started_end"):
            if req.get_param(unsupported):
                raise falcon.HTTPBadRequest(title="Bad Request",
                                            description=f"{unsupported} is not supported; filter by state, taskname, "
                                                        "workername or search, and sort by received")
        state = req.get_param("state")
        if state and state.upper() not in tasks.STATES:
            raise falcon.HTTPBadRequest(title="Bad Request",
                                        description=f"state must be one of {', '.join(tasks.STATES)}")
        flt = tasks.TaskFilter(state=state, taskname=req.get_param("taskname"),
                               workername=req.get_param("workername"), search=req.get_param("search"))
        omitted: dict[str, int] = {}
        total, found = tasks.find_tasks(self.sources.client, self.sources.queues, flt, sort_by=sort_by,
                                        offset=offset, limit=limit, omitted=omitted)
        # Flower's body is {uuid: task}: what it leaves out goes in headers
        resp.set_header("X-Total-Count", str(total))
        if omitted:
            resp.set_header("X-Queued-Not-Listed", ", ".join(f"{q}={n}" for q, n in sorted(omitted.items())))
        resp.media = {t["uuid"]: t for t in found}


class TaskInfo:
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        found = tasks.task_info(self.sources.client, self.sources.queues, task_id)
        if found is None:
            raise falcon.HTTPNotFound(title="Not Found", description=f"unknown task {task_id!r}")
        found.pop("queue", None)
        resp.media = found


class QueueLengths:
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Named by their Redis lists, as Flower names Celery's queues ("celery", "state"); the
        # waiting count the pages and /metrics show (the broker's sizes.lua).
        resp.media = {"active_queues": [{"name": keys.queue_key(q),
                                         "messages": int(self.sources.broker.queue_sizes(q)["waiting"])}
                                        for q in self.sources.queues]}


class TaskTypes:
    """``GET /api/task/types``: Flower's ``{"task-types": [...]}`` (the registered tasks)."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"task-types": sorted(self.sources.registered())}


class NotOffered:
    """A Flower API endpoint this project does not offer: 501 JSON with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def _refuse(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        raise falcon.HTTPNotImplemented(title="Not Implemented", description=self.reason)

    on_get = on_post = _refuse


class Healthcheck:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "OK"


class DeadLetterAction:
    """``POST .../broker/dead/<queue>/<id>/retry`` and ``.../delete`` (or ``.../<queue>/retry?id=<id>``,
    for any id): JSON answers, 404 for unknown ids."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def on_post(self, req: falcon.Request, resp: falcon.Response, queue: str, part: str, action: str) -> None:
        self._act(req, resp, queue, action, part)

    def _act(self, req: falcon.Request, resp: falcon.Response, queue: str, action: str,
             message_id: str | None) -> None:
        name = queue_name(self.sources, queue)
        if message_id is None:
            # ``.../<action>?id=``: any id, '/' too (a WSGI server decodes %2F in the path)
            message_id = req.get_param("id")
            if not message_id:
                raise falcon.HTTPBadRequest(title="Bad Request", description="id is required")
        try:
            if action == "retry":
                self.sources.broker.retry_dead_letter(name, message_id)
                resp.media = {"ok": True, "action": "retry", "queue": name, "id": message_id,
                              "message": f"message {message_id} is back in queue {name}"}
            elif action == "delete":
                self.sources.broker.delete_dead_letter(name, message_id)
                resp.media = {"ok": True, "action": "delete", "queue": name, "id": message_id,
                              "message": f"message {message_id} deleted"}
            else:
                raise falcon.HTTPNotFound(title="Not Found", description=f"unknown action {action!r}")
        except DeadLetterNotFound:
            raise falcon.HTTPNotFound(title="Not Found",
                                      description=f"no dead letter {message_id!r} in queue {name}") from None

    def on_post_by_id(self, req: falcon.Request, resp: falcon.Response, queue: str, part: str) -> None:
        self._act(req, resp, queue, part, None)


def add_routes(app: falcon.App, sources: Sources) -> None:
    app.add_route("/api/workers", Workers(sources))
    app.add_route("/api/tasks", TaskList(sources))
    app.add_route("/api/task/info/{task_id}", TaskInfo(sources))
    app.add_route("/api/queues/length", QueueLengths(sources))
    app.add_route("/api/task/types", TaskTypes(sources))
    app.add_route("/api/task/revoke/{task_id}", NotOffered(
        "revoke is not offered: Dramatiq cannot cancel a running task, and a waiting one is removed by deleting "
        "it from its queue page or letting it run"))
    app.add_route("/healthcheck", Healthcheck())
    action = DeadLetterAction(sources)
    # One field name per level (Falcon's rule): {part} is the id, or the action when ?id= names the id.
    app.add_route("/broker/dead/{queue}/{part}/{action}", action)
    app.add_route("/broker/dead/{queue}/{part}", action, suffix="by_id")
