"""Tasks in Flower's shape: the workers' history plus what waits in the queues.

History records come from :mod:`actors.task_history`; messages queued
before anything ran them (waiting, or delayed by a countdown or a retry)
come from the broker's keys through :mod:`actors.queue_browser`, so tasks
sent before the monitor started still show up (flower#1428).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from actors import queue_browser, task_history
from actors.names import celery_name

__all__ = ["FLOWER_KEYS", "STATES", "TaskFilter", "flower_task", "find_tasks", "task_info", "QUEUED_SCAN_LIMIT",
           "MAX_PAGE"]

#: The keys of a task in Flower's API, in its order.
FLOWER_KEYS = ("uuid", "name", "state", "received", "sent", "started", "rejected", "succeeded", "failed", "retried",
               "revoked", "args", "kwargs", "eta", "expires", "retries", "result", "exception", "timestamp",
               "runtime", "traceback", "exchange", "routing_key", "clock", "client", "root_id", "parent_id",
               "children", "worker")

#: Celery's task states the monitor shows.
STATES = ("PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REJECTED", "REQUEUED")

#: Most waiting (and delayed) messages per queue listed among the tasks;
#: the queue's own page pages through all of them.
QUEUED_SCAN_LIMIT = 1000


def flower_task(record: dict[str, Any]) -> dict[str, Any]:
    """A history record (or a queued message) as Flower's API shows a task."""
    task = {key: record.get(key) for key in FLOWER_KEYS}
    if task["name"]:
        task["name"] = celery_name(str(task["name"]))
    task["children"] = []
    task["exchange"] = ""
    task["root_id"] = task["root_id"] or task["uuid"]
    return task


def _queued(client: redis.Redis, queues: Iterable[str],
            omitted: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The queued messages listed among the tasks; ``omitted`` gets, per queue, how many are not."""
    found = []
    for queue in queues:
        waiting_total, waiting = queue_browser.waiting(client, queue, limit=QUEUED_SCAN_LIMIT)
        delayed_total, delayed = queue_browser.delayed(client, queue, limit=QUEUED_SCAN_LIMIT)
        if omitted is not None:
            left = waiting_total - len(waiting) + delayed_total - len(delayed)
            if left > 0:
                omitted[queue] = left
        for entry, state in [*((w, "PENDING") for w in waiting), *((d, "RETRY" if d["retries"] else "PENDING")
                                                                    for d in delayed)]:
            if entry["id"] is None:
                continue
            found.append(_as_task(entry, queue, state))
    return found


def _as_task(entry: dict[str, Any], queue: str, state: str) -> dict[str, Any]:
    return {"uuid": entry["id"], "name": entry["name"], "state": state, "sent": entry.get("sent_at"),
            "args": entry["args"], "kwargs": entry["kwargs"], "retries": entry["retries"], "eta": entry.get("eta"),
            "routing_key": queue, "queue": queue, "timestamp": entry.get("sent_at"), "worker": None}


#: The filters of ``/tasks`` and ``/api/tasks`` (Flower's parameter names).
TaskFilter = task_history.TaskFilter

#: Most tasks one answer lists.
MAX_PAGE = task_history.MAX_PAGE


def find_tasks(client: redis.Redis, queues: Iterable[str], flt: TaskFilter, *, sort_by: str | None = None,
               offset: int = 0, limit: int = MAX_PAGE,
               omitted: dict[str, int] | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(how many tasks match, one page of them in Flower's shape): see :func:`actors.task_history.find`.

    Of each queue only the :data:`QUEUED_SCAN_LIMIT` waiting and delayed
    messages next to run are listed; ``omitted`` gets, per queue, how many
    more there are (the queue's own page lists them all).
    """
    total, found = task_history.find(client, flt, queued=_queued(client, queues, omitted), sort_by=sort_by,
                                     offset=offset, limit=limit)
    return total, [flower_task(t) for t in found]


def task_info(client: redis.Redis, queues: Iterable[str], task_id: str) -> dict[str, Any] | None:
    """One task in Flower's shape (history first, then the queues), or None."""
    record = task_history.get_task(client, task_id)
    if record is not None:
        return flower_task(record) | {"queue": record.get("queue")}
    for queue in queues:
        hit = queue_browser.find(client, queue, task_id, limit=QUEUED_SCAN_LIMIT)
        if hit is not None:
            where, entry = hit
            queued = _as_task(entry, queue, "PENDING" if where == "waiting" or not entry["retries"] else "RETRY")
            return flower_task(queued) | {"queue": queue}
    return None
