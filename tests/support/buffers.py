"""Buffers whose messages came a while ago, by Redis's clock.

``app.buffer`` stamps arrivals with Redis's clock inside its scripts, so
a test cannot hand it an old time: it appends, then moves the arrival
keys back.  Sleeping out a window instead would make slow tests that
flake on a loaded machine.
"""

from __future__ import annotations

import redis

from actors.periodic import redis_now_ms
from app.buffer import conversation_key

__all__ = ["backdate", "redis_now_ms"]


def backdate(client: redis.Redis, conversation: str, *, first_ago_ms: int, last_ago_ms: int | None = None) -> int:
    """Let the conversation's first buffered message have come ``first_ago_ms``
    before Redis's now, and its last ``last_ago_ms`` before (default: the same).

    Their TTLs are kept.  Returns the Redis time (ms) they were set from.
    """
    now_ms = redis_now_ms(client)
    last_ago_ms = first_ago_ms if last_ago_ms is None else last_ago_ms
    for kind, ago_ms in (("first", first_ago_ms), ("last", last_ago_ms)):
        assert client.set(conversation_key(kind, conversation), now_ms - ago_ms, xx=True, keepttl=True), \
            f"{conversation} has no buffered message"
    return now_ms
