"""Celery's inspect replies, built from what a node wrote in the registry.

Each function takes a :class:`actors.registry.Node` and returns what a
Celery worker would answer to that inspect command (celery/worker/control.py),
in the same shape, so scripts that parse ``inspect --json`` keep working.
Numbers the registry does not hold (Celery's logical clock) are
``None``: nothing is made up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from actors.keys import queue_key
from actors.names import celery_name
from actors.registry import Node

__all__ = ["REPLIES", "ping", "active", "reserved", "registered", "active_queues", "stats", "app_tasks"]


#: The exchange every queue of the runbook is bound to (kombu's default).
_EXCHANGE = {"name": "celery", "type": "direct", "arguments": None, "durable": True, "passive": False,
             "auto_delete": False, "delivery_mode": None, "no_declare": False}


def ping(node: Node) -> dict[str, Any]:
    return {"ok": "pong"}


#: Key order of Celery's task dicts (celery/worker/request.py ``info``).
_TASK_KEYS = ("id", "name", "args", "kwargs", "type", "hostname", "time_start", "acknowledged",
              "delivery_info", "worker_pid")


def _celery_order(task: dict[str, Any]) -> dict[str, Any]:
    ordered = {k: task[k] for k in _TASK_KEYS if k in task}
    ordered.update((k, v) for k, v in task.items() if k not in ordered)
    return ordered


def active(node: Node) -> list[dict[str, Any]]:
    """The tasks the node runs, as Celery's ``inspect active`` lists them."""
    return [_celery_order(t) for t in node.active]


def reserved(node: Node) -> list[dict[str, Any]]:
    """The messages the node took but has not started."""
    return [_celery_order(t) for t in node.reserved]


def app_tasks() -> list[str]:
    """The runbook's tasks as Celery names them under ``-A tasks`` (module and function)."""
    from actors import TASKS  # builds the broker: only when asked

    return sorted(celery_name(name) for name in TASKS)


def registered(node: Node) -> list[str]:
    """The task names the node runs, sorted (the app's five if it did not say)."""
    names = node.info.get("registered")
    return sorted(names) if isinstance(names, list) and names else app_tasks()


def active_queues(node: Node) -> list[dict[str, Any]]:
    """One kombu ``Queue.as_dict(recurse=True)`` per queue the node consumes; the routing key
    is the queue's Redis list, as in the banner and the messages' ``delivery_info``."""
    return [
        {"name": name, "exchange": dict(_EXCHANGE), "routing_key": queue_key(name), "queue_arguments": None,
         "binding_arguments": None, "consumer_arguments": None, "durable": True, "exclusive": False,
         "auto_delete": False, "no_ack": False, "alias": None, "bindings": [], "no_declare": None,
         "expires": None, "message_ttl": None, "max_length": None, "max_length_bytes": None,
         "max_priority": None}
        for name in node.info.get("queues") or []
    ]


def _broker(value: Any) -> Any:
    """Celery's ``broker`` block (kombu's ``Connection.info()`` without the password)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "password"}
    if not isinstance(value, str) or not value:
        return None
    url = urlsplit(value)
    return {"hostname": url.hostname, "userid": url.username or None,
            "virtual_host": url.path.lstrip("/") or "0", "port": url.port or 6379,
            "ssl": url.scheme == "rediss", "transport": "redis"}


def _total(node: Node) -> dict[str, int]:
    total: dict[str, int] = {}
    for proc in node.processes.values():
        for name, count in (proc.get("by_task") or {}).items():
            total[name] = total.get(name, 0) + int(count)
    return total


def stats(node: Node, *, now_s: float | None = None) -> dict[str, Any]:
    """Celery's ``inspect stats`` keys, filled from the node's info and processes."""
    info = node.info
    now_s = time.time() if now_s is None else now_s
    started = info.get("started_at")
    pids = sorted(int(pid) for pid in node.processes if str(pid).isdigit())
    timeouts = [info.get("soft_time_limit"), info.get("time_limit")]
    return {
        "broker": _broker(info.get("broker")),
        "clock": None,  # Celery's logical clock: the registry has none.
        "pid": info.get("pid"),
        "pool": {
            "implementation": info.get("pool"),
            "max-concurrency": info.get("concurrency"),
            "max-tasks-per-child": info.get("max_tasks_per_child"),
            "max-memory-per-child": info.get("max_memory_per_child"),
            "processes": pids,
            # Celery's order: (soft, hard), in seconds.
            "timeouts": timeouts if any(t is not None for t in timeouts) else [],
            "rss-kib": {str(pid): node.processes[str(pid)].get("rss_kib") for pid in pids},
        },
        "prefetch_count": info.get("prefetch_count"),
        "rusage": info.get("rusage"),  # getrusage of the process that beats for the node
        "total": _total(node),
        "uptime": round(now_s - float(started)) if isinstance(started, (int, float)) else None,
    }


#: The inspect commands offered, by name.
REPLIES: dict[str, Callable[[Node], Any]] = {
    "active": active,
    "active_queues": active_queues,
    "ping": ping,
    "registered": registered,
    "reserved": reserved,
    "stats": stats,
}
