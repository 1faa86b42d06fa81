"""What waits in a queue: its waiting and delayed messages, read from the broker's keys.

Flower cannot show which messages sit in a queue (flower#1010); here the
queue lists and delayed sets are plain Redis keys, so the monitor pages
through them.  Reads are paged (``LRANGE``/``ZRANGE`` of one page), never
the whole list.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from actors import keys
from actors.envelope import UndecodableMessage, decode
from actors.names import celery_name
from actors.task_history import clip
from facade.api import from_dramatiq_priority

__all__ = ["waiting", "delayed", "oldest_waiting_age_s", "AGE_SCAN_LIMIT", "ARG_CHARS"]

#: Most waiting messages read to find the oldest one (a list is sorted by
#: priority, so the oldest may sit anywhere).
AGE_SCAN_LIMIT = 20_000

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


def oldest_waiting_age_s(client: redis.Redis, queue: str, *, now_ms: int | None = None,
                         scan_limit: int = AGE_SCAN_LIMIT, chunk: int = 1000) -> float:
    """Seconds the oldest waiting message of ``queue`` has waited (0 for an empty queue).

    Only the ``scan_limit`` messages nearest the tail are read.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    key = keys.queue_key(queue)
    oldest: int | None = None
    for start in range(0, scan_limit, chunk):
        raws = client.lrange(key, -(start + chunk), -(start + 1))
        for raw in raws:
            stamp = _timestamp(raw)
            if stamp is not None and (oldest is None or stamp < oldest):
                oldest = stamp
        if len(raws) < chunk:
            break
    return 0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000)


def _timestamp(raw: bytes | str) -> int | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    value = data.get("message_timestamp") if isinstance(data, dict) else None
    return value if isinstance(value, int) else None
