"""Tasks in Flower's shape: the workers' history plus what waits in the queues.

History records come from :mod:`actors.task_history`; messages queued
before anything ran them (waiting, or delayed by a countdown or a retry)
come from the broker's keys through :mod:`actors.queue_browser`, so tasks
sent before the monitor started still show up (flower#1428).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from actors import keys, queue_browser, task_history
from actors.names import celery_name

__all__ = ["FLOWER_KEYS", "STATES", "TaskFilter", "flower_task", "find_tasks", "task_info", "QUEUED_SCAN_LIMIT"]

#: The keys of a task in Flower's API, in its order.
FLOWER_KEYS = ("uuid", "name", "state", "received", "sent", "started", "rejected", "succeeded", "failed", "retried",
               "revoked", "args", "kwargs", "eta", "expires", "retries", "result", "exception", "timestamp",
               "runtime", "traceback", "exchange", "routing_key", "clock", "client", "root_id", "parent_id",
               "children", "worker")

#: Celery's task states the monitor shows.
STATES = ("PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REJECTED")

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


def _queued(client: redis.Redis, queues: Iterable[str]) -> list[dict[str, Any]]:
    found = []
    for queue in queues:
        _total, waiting = queue_browser.waiting(client, queue, limit=QUEUED_SCAN_LIMIT)
        _total, delayed = queue_browser.delayed(client, queue, limit=QUEUED_SCAN_LIMIT)
        for entry, state in [*((w, "PENDING") for w in waiting), *((d, "RETRY" if d["retries"] else "PENDING")
                                                                    for d in delayed)]:
            if entry["id"] is None:
                continue
            found.append({"uuid": entry["id"], "name": entry["name"], "state": state, "sent": entry.get("sent_at"),
                          "args": entry["args"], "kwargs": entry["kwargs"], "retries": entry["retries"],
                          "eta": entry.get("eta"), "routing_key": queue, "queue": queue,
                          "timestamp": entry.get("sent_at"), "worker": None})
    return found


@dataclass(frozen=True)
class TaskFilter:
    """The filters of ``/tasks`` and ``/api/tasks`` (Flower's parameter names)."""

    state: str | None = None
    taskname: str | None = None
    workername: str | None = None
    search: str | None = None

    def accepts(self, task: dict[str, Any]) -> bool:
        if self.state and str(task.get("state") or "") != self.state.upper():
            return False
        if self.taskname:
            name = str(task.get("name") or "")
            if self.taskname not in (name, celery_name(name)):
                return False
        if self.workername and task.get("worker") != self.workername:
            return False
        if self.search:
            needle = self.search.lower()
            haystack = " ".join(str(task.get(k) or "") for k in ("uuid", "name", "args", "kwargs", "result",
                                                                 "exception", "worker", "state"))
            if needle not in haystack.lower():
                return False
        return True


def _all(client: redis.Redis, queues: Iterable[str]) -> list[dict[str, Any]]:
    history = task_history.all_tasks(client)
    known = {t.get("uuid"): t for t in history}
    merged = list(history)
    for queued in _queued(client, queues):
        record = known.get(queued["uuid"])
        if record is None:
            merged.append(queued)
        elif queued.get("eta") is not None:
            record["eta"] = queued["eta"]  # a scheduled retry: when it runs next
    return merged


def find_tasks(client: redis.Redis, queues: Iterable[str], flt: TaskFilter, *, sort_by: str | None = None,
               offset: int = 0, limit: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(how many tasks match, one page of them in Flower's shape).

    The default order is newest first; ``sort_by`` names a Flower key,
    with ``-`` in front for descending.  The plain newest-first page (no
    filter, no sort) reads only that page's records; anything else reads
    the whole history (bounded by ``MONITOR_MAX_TASKS``).
    """
    if limit is not None and not sort_by and flt == TaskFilter():
        return _newest_page(client, queues, offset, limit)
    tasks = [flower_task(t) for t in _all(client, queues) if flt.accepts(t)]
    if sort_by:
        key = sort_by.lstrip("-")
        present = [t for t in tasks if t.get(key) is not None]
        missing = [t for t in tasks if t.get(key) is None]
        present.sort(key=lambda t: (isinstance(t[key], str), t[key]), reverse=sort_by.startswith("-"))
        tasks = present + missing
    else:
        tasks.sort(key=lambda t: float(t.get("timestamp") or 0), reverse=True)
    total = len(tasks)
    end = None if limit is None else offset + limit
    return total, tasks[offset:end]


def _newest_page(client: redis.Redis, queues: Iterable[str], offset: int,
                 limit: int) -> tuple[int, list[dict[str, Any]]]:
    queued = _queued(client, queues)
    with client.pipeline(transaction=False) as pipe:
        for entry in queued:
            pipe.zscore(keys.task_index_key(), entry["uuid"])
        pipe.zcard(keys.task_index_key())
        pipe.zrevrange(keys.task_index_key(), 0, offset + limit - 1, withscores=True)
        *scores, total_history, top = pipe.execute()
    etas = {q["uuid"]: q["eta"] for q in queued if q.get("eta") is not None}
    only_queued = [q for q, score in zip(queued, scores, strict=True) if score is None]
    merged: list[tuple[float, str, Any]] = [(score / 1000, "history", raw_id) for raw_id, score in top]
    merged += [(float(q.get("timestamp") or 0), "queued", q) for q in only_queued]
    merged.sort(key=lambda item: item[0], reverse=True)
    page = merged[offset:offset + limit]
    history_ids = [i.decode() if isinstance(i, bytes) else str(i) for _, kind, i in page if kind == "history"]
    records = {r.get("uuid"): r for r in task_history.get_tasks(client, history_ids)}
    found = []
    for _, kind, item in page:
        if kind == "queued":
            found.append(flower_task(item))
            continue
        task_id = item.decode() if isinstance(item, bytes) else str(item)
        record = records.get(task_id)
        if record is not None:  # else it expired between the two reads
            found.append(flower_task({**record, "eta": etas.get(task_id, record.get("eta"))}))
    return int(total_history) + len(only_queued), found


def task_info(client: redis.Redis, queues: Iterable[str], task_id: str) -> dict[str, Any] | None:
    """One task in Flower's shape (history first, then the queues), or None."""
    record = task_history.get_task(client, task_id)
    if record is not None:
        return flower_task(record) | {"queue": record.get("queue")}
    for queued in _queued(client, queues):
        if queued["uuid"] == task_id:
            return flower_task(queued) | {"queue": queued.get("queue")}
    return None
