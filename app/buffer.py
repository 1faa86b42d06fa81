"""The per-conversation buffer of inbound messages, in Redis under ``app:``.

Inbound messages of one conversation that arrive within the buffer
window are answered together.  Every append bumps the conversation's
sequence number; a buffer check carries the number it was scheduled for
and gives way to a newer one, unless the first message has waited for
the maximum.  A claimed batch is remembered for a day under its check's
sequence number, so a worker dying between claim and hand-over loses
nothing: the check runs again (delivery is at least once) and hands the
same batch over.

Arrival times (``app:first:``, ``app:last:``) are written and compared
by Redis's clock, read inside the scripts: the web host that accepts a
message, the worker that claims it and the beat that sweeps for lost
checks then judge the window by one clock, so a host whose clock is off
claims a buffer neither early nor late.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import redis

from app.redis_clock import NOW_MS_LUA

__all__ = ["Batch", "append_to_buffer", "claim_batch", "conversation_key", "pending_seq", "DEDUP_TTL_S"]

#: Meta redelivers a webhook for up to about 7 days.
DEDUP_TTL_S = 7 * 86400


def conversation_key(kind: str, conversation: str) -> str:
    """The key of one of a conversation's buffer records: ``app:<kind>:<conversation>``."""
    return f"app:{kind}:{conversation}"


def dedup_key(wamid: str) -> str:
    return f"app:seen:{wamid}"


# KEYS: dedup, buffer, seq, first-at, last-at.  ARGV: element, ttl s.
# Returns the new sequence number, or 0 for a wamid seen before.  Every
# append renews the conversation's keys for the dedup TTL, so a customer
# who goes quiet leaves nothing behind for good.  The numbers start again
# at 1 after that; the claimed batches (kept a day) are long gone by then.
_APPEND = NOW_MS_LUA + """
if not redis.call("SET", KEYS[1], "1", "NX", "EX", ARGV[2]) then
  return 0
end
redis.call("RPUSH", KEYS[2], ARGV[1])
redis.call("EXPIRE", KEYS[2], ARGV[2])
redis.call("SET", KEYS[4], now, "NX", "EX", ARGV[2])
redis.call("SET", KEYS[5], now, "EX", ARGV[2])
local seq = redis.call("INCR", KEYS[3])
redis.call("EXPIRE", KEYS[3], ARGV[2])
return seq
"""

# KEYS: buffer, seq, first-at, claimed, last-at.  ARGV: seq, max wait ms, keep s.
# Returns {} when a newer check will do the work, else {batch id, batch}.
# A check that runs again (redelivered after a crash) gets the batch it
# claimed before, so a batch is never lost between claim and hand-over.
_CLAIM = NOW_MS_LUA + """
local claimed = redis.call("HGET", KEYS[4], ARGV[1])
if claimed then
  return {redis.sha1hex(claimed), claimed}
end
local current = tonumber(redis.call("GET", KEYS[2]) or "0")
local first = tonumber(redis.call("GET", KEYS[3]) or now)
if current ~= tonumber(ARGV[1]) and now - first < tonumber(ARGV[2]) then
  return {}
end
local batch = redis.call("LRANGE", KEYS[1], 0, -1)
if #batch == 0 then
  return {}
end
redis.call("DEL", KEYS[1], KEYS[3], KEYS[5])
local payload = cjson.encode(batch)
redis.call("HSET", KEYS[4], ARGV[1], payload)
redis.call("EXPIRE", KEYS[4], ARGV[3])
return {redis.sha1hex(payload), payload}
"""

#: How long a claimed batch is remembered for a check that runs again.
CLAIM_MEMORY_S = 86400


@functools.lru_cache(maxsize=32)
def _script(client: redis.Redis, source: str):
    """``source`` registered on ``client`` once (it runs by EVALSHA)."""
    return client.register_script(source)


@dataclass(frozen=True)
class Batch:
    """Inbound messages to answer in one model call, in arrival order."""

    batch_id: str
    messages: list[dict[str, Any]]


def append_to_buffer(client: redis.Redis, conversation: str, wamid: str, message: dict[str, Any]) -> int:
    """Accept ``message`` once per wamid and append it to the buffer.

    Its arrival is stamped by Redis's clock (see the module docstring).

    Returns:
      The conversation's new sequence number, or 0 for a duplicate.
    """
    script = _script(client, _APPEND)
    element = json.dumps(message, separators=(",", ":"))
    keys = [dedup_key(wamid), *(conversation_key(kind, conversation) for kind in ("buffer", "seq", "first", "last"))]
    return int(script(keys=keys, args=[element, DEDUP_TTL_S]))


def pending_seq(client: redis.Redis, conversation: str) -> int:
    """The conversation's sequence number while its buffer holds messages, else 0.

    A buffer check scheduled for it answers whatever waits: the webhook
    schedules one when Meta redelivers a message that is still buffered,
    because the first delivery may have failed to schedule its check.
    """
    with client.pipeline(transaction=True) as pipe:
        pipe.llen(conversation_key("buffer", conversation))
        pipe.get(conversation_key("seq", conversation))
        waiting, seq = pipe.execute()
    return int(seq or 0) if waiting else 0


def claim_batch(client: redis.Redis, conversation: str, seq: int, *, max_wait_ms: int) -> Batch | None:
    """Take the buffer if ``seq`` is still the latest (or the wait is over).

    The wait is over when the first waiting message came ``max_wait_ms``
    ago or more by Redis's clock, whatever the calling host's clock says.
    """
    script = _script(client, _CLAIM)
    keys = [conversation_key(kind, conversation) for kind in ("buffer", "seq", "first", "claimed", "last")]
    result = script(keys=keys, args=[seq, max_wait_ms, CLAIM_MEMORY_S])
    if not result:
        return None
    batch_id, payload = result[0].decode(), result[1]
    return Batch(batch_id, [json.loads(e) for e in json.loads(payload)])

