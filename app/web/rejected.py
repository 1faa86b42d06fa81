"""Signed webhook bodies the service could not understand, kept for the monitor.

Meta retries a 4xx/5xx for days, so a poison body is answered 200 and
recorded here instead, with its reason.  The records sit next to the
broker's dead letters, as the dead-letter set of a pseudo-queue named
``webhook`` (``dramatiq:webhook.dead`` scored by time in ms, and
``dramatiq:webhook.dead.msgs`` holding the JSON records), in the same
record shape, so whatever lists dead letters lists these too.

A body is one record, whatever it holds: when parts of it could not be
used (the rest was), the record lists every problem (where, and why)
and says it is ``partial``.  One record per problem would store the same
excerpt once per problem and, the set being capped, let one body with
many bad parts push every other record out; the monitor would count
problems where an operator looks at bodies; and the body, not a part, is
what one reads or replays.

The set is bounded three ways: a record keeps at most
:data:`MAX_EXCERPT_BYTES` of the body (plus its size and SHA-256) and
:data:`MAX_LISTED_PROBLEMS` problems, the set keeps at most
:data:`MAX_RECORDS`, and records older than the dead-letter TTL are
dropped on every write.  A body Meta retries is one record (its id is
its hash), refreshed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import redis

from app.redis_clock import NOW_MS_LUA
from app.untrusted import text
from app.webhook import BODY

__all__ = ["REJECTED_QUEUE", "record_rejected_body", "rejected_bodies", "MAX_RECORDS", "MAX_EXCERPT_BYTES",
           "MAX_LISTED_PROBLEMS"]

#: The pseudo-queue whose dead-letter set holds rejected webhook bodies.
REJECTED_QUEUE = "webhook"
#: How many rejected bodies are kept at most (the oldest go first).
MAX_RECORDS = 1000
#: How much of a rejected body is kept, in bytes.
MAX_EXCERPT_BYTES = 64 * 1024
#: How many of a body's problems a record lists (it counts them all).
MAX_LISTED_PROBLEMS = 100
#: How long the reason (the record's ``error``) may be, in characters.
MAX_REASON_CHARS = 4096

_DEAD_KEY = f"dramatiq:{REJECTED_QUEUE}.dead"
_DEAD_MESSAGES_KEY = f"dramatiq:{REJECTED_QUEUE}.dead.msgs"

# KEYS: dead zset, dead hash.  ARGV: id, JSON record, ttl ms, max records.
# Adds failed_at (ms) to the record.
# Redis's clock scores the record, as the broker's dead letters are scored.
_RECORD = NOW_MS_LUA + """
-- Scores increase strictly, so records made in one millisecond keep their order.
local last = redis.call("ZRANGE", KEYS[1], -1, -1, "WITHSCORES")
local score = now
if #last == 2 and tonumber(last[2]) >= now then
  score = tonumber(last[2]) + 1
end
redis.call("ZADD", KEYS[1], score, ARGV[1])
local record = cjson.decode(ARGV[2])
record["failed_at"] = now
redis.call("HSET", KEYS[2], ARGV[1], cjson.encode(record))
local old = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", "(" .. (now - tonumber(ARGV[3])))
local extra = redis.call("ZCARD", KEYS[1]) - #old - tonumber(ARGV[4])
if extra > 0 then
  for _, id in ipairs(redis.call("ZRANGE", KEYS[1], #old, #old + extra - 1)) do
    table.insert(old, id)
  end
end
for i = 1, #old, 500 do
  local chunk = {unpack(old, i, math.min(i + 499, #old))}
  redis.call("ZREM", KEYS[1], unpack(chunk))
  redis.call("HDEL", KEYS[2], unpack(chunk))
end
return now
"""


@functools.lru_cache(maxsize=8)
def _script(client: redis.Redis):
    return client.register_script(_RECORD)


def record_rejected_body(client: redis.Redis, raw: bytes, reason: str, *, ttl_ms: int,
                         problems: Sequence[tuple[str, str]] = (), partial: bool = False,
                         max_records: int = MAX_RECORDS) -> str:
    """Keep ``raw`` (an excerpt) and why it was rejected; returns the record id.

    Parameters:
      reason: one line for the record's ``error``.
      problems: ``(where, why)`` of each part that could not be used;
        without them the body is one problem, at ``body``.
      partial: the rest of the body was used.

    Raises:
      redis.RedisError: Redis did not take it (the caller answers 503,
        so Meta sends the body again).
    """
    digest = hashlib.sha256(raw).hexdigest()
    record_id = f"webhook-{digest[:32]}"
    listed = list(problems) or [(BODY, reason)]
    what = "part of a webhook body (the rest was used)" if partial else "webhook body"
    record = {
        "message_id": record_id,
        "queue_name": REJECTED_QUEUE,
        # (reasons quote the body: cut, and lone surrogates escaped, which cjson would refuse)
        "error": f"rejected {what}: {text(reason, MAX_REASON_CHARS)}",
        "traceback": None,
        "message": None,
        "raw": raw[:MAX_EXCERPT_BYTES].decode("utf-8", "replace"),
        "size_bytes": len(raw),
        "sha256": digest,
        "partial": partial,
        "problem_count": len(listed),
        "problems": [{"where": text(where), "reason": text(why)} for where, why in listed[:MAX_LISTED_PROBLEMS]],
    }
    _script(client)(keys=[_DEAD_KEY, _DEAD_MESSAGES_KEY], args=[record_id, json.dumps(record), ttl_ms, max_records])
    return record_id


def rejected_bodies(client: redis.Redis) -> list[dict[str, Any]]:
    """The rejected-body records, oldest first."""
    ids = client.zrange(_DEAD_KEY, 0, -1)
    if not ids:
        return []
    found = client.hmget(_DEAD_MESSAGES_KEY, list(ids))  # type: ignore[arg-type]
    return [json.loads(r) for r in found if r is not None]
