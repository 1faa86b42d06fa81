"""The dead-letter sets: failed messages with their error, kept for a while."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import redis
from dramatiq import Message

from actors import keys

__all__ = ["record", "records", "page", "get", "retry", "delete", "trim", "DeadLetterNotFound"]


class DeadLetterNotFound(LookupError):
    """No dead letter with that id in that queue (never, or retried, deleted or expired meanwhile)."""


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
    if message is None:
        try:
            element.decode("utf-8")
        except UnicodeDecodeError:
            # "raw" is for reading; a retry re-enqueues these exact bytes
            entry["raw_b64"] = base64.b64encode(element).decode("ascii")
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


def page(client: redis.Redis, queue_name: str, *, offset: int = 0, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
    """(how many dead letters ``queue_name`` has, the ``limit`` newest from ``offset``)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.zcard(keys.dead_key(queue_name))
        pipe.zrevrange(keys.dead_key(queue_name), offset, offset + limit - 1)
        total, ids = pipe.execute()
    if not ids:
        return int(total), []
    found = client.hmget(keys.dead_messages_key(queue_name), list(ids))  # type: ignore[arg-type]
    return int(total), [json.loads(r) for r in found if r is not None]


def get(client: redis.Redis, queue_name: str, message_id: str) -> dict[str, Any] | None:
    """One dead-letter record, or None."""
    raw = client.hget(keys.dead_messages_key(queue_name), message_id)
    return None if raw is None else json.loads(raw)


def _element(entry: dict[str, Any], encode: Callable[[Message], bytes]) -> bytes:
    """The queue element that runs a dead letter again, as a first attempt."""
    data = entry.get("message")
    if data is None:
        # A message no worker could read: it goes back as it was (and
        # comes back here if it still cannot be read).
        if entry.get("raw_b64"):
            return base64.b64decode(entry["raw_b64"])
        return str(entry.get("raw") or "").encode("utf-8")
    options = {k: v for k, v in (data.get("options") or {}).items() if k not in ("retries", "error", "traceback")}
    message: Message = Message(
        queue_name=str(data["queue_name"]), actor_name=str(data["actor_name"]), args=tuple(data.get("args") or ()),
        kwargs=dict(data.get("kwargs") or {}), options=options, message_id=str(data["message_id"]),
        message_timestamp=int(time.time() * 1000),
    )
    return encode(message)


def retry(client: redis.Redis, scripts: dict, queue_name: str, message_id: str, *,
          encode: Callable[[Message], bytes]) -> dict[str, Any]:
    """Move a dead letter back to the end of its queue's line, retries reset, in one step.

    Parameters:
      encode: the broker's encoder (puts the priority in front).

    Returns:
      The record that was retried.

    Raises:
      DeadLetterNotFound: ``message_id`` is not dead-lettered in ``queue_name``.
    """
    entry = get(client, queue_name, message_id)
    if entry is None:
        raise DeadLetterNotFound(message_id)
    moved = scripts["dead_retry"](
        keys=[keys.dead_key(queue_name), keys.dead_messages_key(queue_name), keys.queue_key(queue_name)],
        args=[message_id, _element(entry, encode)],
    )
    if not moved:
        raise DeadLetterNotFound(message_id)
    return entry


def delete(scripts: dict, queue_name: str, message_id: str) -> None:
    """Forget a dead letter.

    Raises:
      DeadLetterNotFound: ``message_id`` is not dead-lettered in ``queue_name``.
    """
    removed = scripts["dead_delete"](keys=[keys.dead_key(queue_name), keys.dead_messages_key(queue_name)],
                                     args=[message_id])
    if not removed:
        raise DeadLetterNotFound(message_id)


def trim(scripts: dict, queue_names: list[str], ttl_ms: int) -> int:
    """Drop dead letters older than ``ttl_ms``; returns how many went."""
    script_keys = [k for q in queue_names for k in (keys.dead_key(q), keys.dead_messages_key(q))]
    if not script_keys:
        return 0
    return int(scripts["trim_dead"](keys=script_keys, args=[ttl_ms]))
