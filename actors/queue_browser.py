"""What waits in a queue: its waiting and delayed messages, read from the broker's keys.

Flower cannot show which messages sit in a queue (flower#1010); here the
queue lists and delayed sets are plain Redis keys, so the monitor pages
through them.  Reads are paged (``LRANGE``/``ZRANGE`` of one page), never
the whole list.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import redis

from actors import keys
from actors.envelope import UndecodableMessage, decode
from actors.names import celery_name
from actors.task_history import clip
from facade.api import from_dramatiq_priority

if TYPE_CHECKING:
    from actors.broker import RedisBroker

__all__ = ["waiting", "delayed", "find", "oldest_waiting_age_s", "AGE_TAIL_READ", "ARG_CHARS"]

#: Messages read at the tail of each priority band to find the oldest one.
AGE_TAIL_READ = 8

#: Longest args/kwargs text shown per message, in characters.
ARG_CHARS = 500


def _describe(raw: bytes, queue: str, now_ms: int) -> dict[str, Any]:
    try:
        message = decode(raw, queue, now_ms=now_ms).message
    except UndecodableMessage as e:
        return {"id": None, "name": None, "task": None, "args": clip(raw[:ARG_CHARS].decode("utf-8", "replace"),
                                                                     ARG_CHARS),
                "kwargs": "", "error": str(e), "age_s": None, "priority": None, "retries": 0}
    priority = None
    head = raw[:40]
    if head.startswith(b'{"priority":'):
        try:
            priority = from_dramatiq_priority(int(head[len(b'{"priority":'):].split(b",", 1)[0]))
        except ValueError:
            priority = None
    return {
        "id": message.message_id, "name": message.actor_name, "task": celery_name(message.actor_name),
        "args": clip(list(message.args), ARG_CHARS), "kwargs": clip(dict(message.kwargs), ARG_CHARS),
        "error": None, "age_s": max(0.0, (now_ms - message.message_timestamp) / 1000),
        "sent_at": message.message_timestamp / 1000, "priority": priority,
        "retries": int(message.options.get("retries", 0)),
    }


def waiting(client: redis.Redis, queue: str, *, offset: int = 0, limit: int = 50,
            now_ms: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(how many wait in ``queue``, one page of them, the next to run first).

    Each entry: ``id``, ``name`` (runbook name), ``task`` (Celery's name),
    ``args``, ``kwargs`` (clipped text), ``age_s``, ``priority`` (runbook
    scale), ``retries``; a message no worker could read has ``error``.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    key = keys.queue_key(queue)
    # Consumers take from the tail: index -1 runs next.
    with client.pipeline(transaction=True) as pipe:
        pipe.llen(key)
        pipe.lrange(key, -(offset + limit), -(offset + 1))
        total, raws = pipe.execute()
    if offset >= int(total):
        return int(total), []
    return int(total), [_describe(r, queue, now_ms) for r in reversed(raws)]


def delayed(client: redis.Redis, queue: str, *, offset: int = 0, limit: int = 50,
            now_ms: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(how many are delayed in ``queue``, one page of them, the soonest due first; each with ``eta``)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    key = keys.delayed_key(queue)
    with client.pipeline(transaction=True) as pipe:
        pipe.zcard(key)
        pipe.zrange(key, offset, offset + limit - 1, withscores=True)
        total, entries = pipe.execute()
    return int(total), [{**_describe(raw, queue, now_ms), "eta": score / 1000} for raw, score in entries]


def find(client: redis.Redis, queue: str, message_id: str, *, limit: int,
         now_ms: int | None = None) -> tuple[str, dict[str, Any]] | None:
    """("waiting" or "delayed", the entry) of ``message_id`` among the ``limit`` messages of
    ``queue`` next to run, or None.  Only elements holding the id's text are decoded."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    needle = message_id.encode("utf-8")
    with client.pipeline(transaction=False) as pipe:
        pipe.lrange(keys.queue_key(queue), -limit, -1)
        pipe.zrange(keys.delayed_key(queue), 0, limit - 1, withscores=True)
        waiting_raws, delayed_entries = pipe.execute()
    for raw in waiting_raws:
        if needle in raw:
            entry = _describe(raw, queue, now_ms)
            if entry["id"] == message_id:
                return "waiting", entry
    for raw, score in delayed_entries:
        if needle in raw:
            entry = _describe(raw, queue, now_ms)
            if entry["id"] == message_id:
                return "delayed", {**entry, "eta": score / 1000}
    return None


def oldest_waiting_age_s(broker: RedisBroker, queue: str, *, now_ms: int | None = None,
                         per_band: int = AGE_TAIL_READ) -> float:
    """Seconds the oldest waiting message of ``queue`` has waited (0 for an empty queue).

    A queue list is sorted by priority and, within one priority, the
    oldest message sits nearest the tail: only the last ``per_band``
    messages of each priority band are read (``oldest.lua``, band edges by
    binary search), never the whole list.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    oldest = broker.scripts["oldest"](keys=[keys.queue_key(queue)], args=[per_band])
    return 0.0 if not oldest else max(0.0, (now_ms - int(oldest)) / 1000)
