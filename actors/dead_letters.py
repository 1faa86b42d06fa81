"""The dead-letter sets: failed messages with their error, kept for a while."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from actors import keys

__all__ = ["record", "records", "trim"]


def record(scripts: dict, *, inflight: str, element: bytes, message_id: str, queue_name: str, error: str,
           tb: str | None, message: dict[str, Any] | None, ttl_ms: int) -> bool:
    """Move one in-flight element to the dead-letter set of its queue, in one step.

    Returns False, recording nothing, when the element was no longer in flight."""
    entry = {
        "message_id": message_id,
        "queue_name": queue_name,
        "error": error,
        "traceback": tb,
        "failed_at": int(time.time() * 1000),
        "message": message,
        "raw": None if message is not None else element.decode("utf-8", "replace"),
    }
    return bool(scripts["dead_letter"](
        keys=[inflight, keys.dead_key(queue_name), keys.dead_messages_key(queue_name)],
        args=[element, message_id, json.dumps(entry, default=repr), ttl_ms],
    ))


def records(client: redis.Redis, queue_name: str) -> list[dict[str, Any]]:
    """The dead-letter records of a queue, oldest first."""
    ids = client.zrange(keys.dead_key(queue_name), 0, -1)
    if not ids:
        return []
    found = client.hmget(keys.dead_messages_key(queue_name), list(ids))  # type: ignore[arg-type]
    return [json.loads(r) for r in found if r is not None]


def trim(scripts: dict, queue_names: list[str], ttl_ms: int) -> int:
    """Drop dead letters older than ``ttl_ms``; returns how many went."""
    script_keys = [k for q in queue_names for k in (keys.dead_key(q), keys.dead_messages_key(q))]
    if not script_keys:
        return 0
    return int(scripts["trim_dead"](keys=script_keys, args=[ttl_ms]))
