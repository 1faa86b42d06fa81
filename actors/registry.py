"""The node registry: which worker nodes are alive and what they run.

A node is one worker invocation (``celery -A tasks worker -n NAME`` or
one ``dramatiq actors`` command), however many processes it has.  Its
processes beat into Redis every :data:`INTERVAL_S`:

- ``dramatiq:nodes``: sorted set of node names scored by their last
  beat, in milliseconds of Redis's clock;
- ``dramatiq:node:<name>``: hash with ``info`` (JSON: name, hostname,
  pid, pool, concurrency, queues, started_at ...) and one
  ``proc:<pid>`` field per process (JSON: its running and reserved
  tasks, counters, and ``beat_ms``).  The key expires after
  :data:`MISSED_BEATS` intervals without a beat of the node.

Only the process that stands for the node keeps it alive (:func:`beat`):
the prefork supervisor, or the single process of ``-P solo``/``threads``.
A prefork child only writes its own ``proc:<pid>`` field
(:func:`beat_process`) and never extends the node's life, so that
children orphaned by a supervisor killed outright (they finish their
running task before they stop) do not keep a dead node online.

A node that stops beating is gone within ``MISSED_BEATS`` intervals:
readers ignore members older than that, and the key expires.  A
process field is dropped by the node's next beat once it is that old
too, so a child that died unseen leaves no ghost.  This is
separate from the broker's process heartbeats (``dramatiq:heartbeats``),
which count processes and drive message recovery; ``/health``,
``celery status``, ``celery inspect`` and the monitor count nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

from actors.keys import NAMESPACE
from app.redis_clock import NOW_MS_LUA

__all__ = ["INTERVAL_S", "MISSED_BEATS", "NODES", "Node", "node_key", "beat", "beat_process", "leave", "live_nodes"]

#: Seconds between two beats of a node's process (Celery's worker
#: heartbeat is 2 s as well).
INTERVAL_S = 2.0

#: A node silent for this many intervals is gone.
MISSED_BEATS = 3

#: Sorted set of node names scored by their last beat (ms).
NODES = f"{NAMESPACE}:nodes"


def node_key(name: str) -> str:
    """Hash of one node: ``info`` and one ``proc:<pid>`` field per process."""
    return f"{NAMESPACE}:node:{name}"


# KEYS: nodes zset, node hash.  ARGV: name, ttl ms, info JSON or "",
# then pairs (field, JSON object) of processes.  Each process JSON gets
# "beat_ms" (Redis's clock) put in front here, as text: decoding and
# encoding it in Lua would reorder the keys of the task dicts (inspect
# prints them in Celery's order) and turn empty lists into objects.
# Process fields older than the ttl are dropped, so a replaced child
# leaves no ghost behind.
_BEAT = NOW_MS_LUA + """
local ttl = tonumber(ARGV[2])
if ARGV[3] ~= "" then
  redis.call("HSET", KEYS[2], "info", ARGV[3])
end
for i = 4, #ARGV, 2 do
  local rest = string.match(ARGV[i + 1], "^{%s*(.-)%s*}$")
  if rest == nil then
    return redis.error_reply("process state of " .. ARGV[i] .. " is not a JSON object")
  end
  local sep = (rest == "") and "" or ","
  redis.call("HSET", KEYS[2], ARGV[i], '{"beat_ms":' .. now .. sep .. rest .. "}")
end
local fields = redis.call("HGETALL", KEYS[2])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 5) == "proc:" then
    local ok, state = pcall(cjson.decode, fields[i + 1])
    if not ok or type(state) ~= "table" or tonumber(state["beat_ms"] or 0) < now - ttl then
      redis.call("HDEL", KEYS[2], fields[i])
    end
  end
end
redis.call("PEXPIRE", KEYS[2], ttl)
redis.call("ZADD", KEYS[1], now, ARGV[1])
return now
"""

# KEYS: node hash.  ARGV: ttl ms, field, JSON object.  Writes one
# process's field (with "beat_ms", as above) and nothing else: the node's
# score and the key's life are its main process's to extend.  A key this
# creates (the node's first beat has not come yet, or its main process is
# gone) gets the ttl, so that it never outlives its writers.
_BEAT_PROCESS = NOW_MS_LUA + """
local rest = string.match(ARGV[3], "^{%s*(.-)%s*}$")
if rest == nil then
  return redis.error_reply("process state of " .. ARGV[2] .. " is not a JSON object")
end
local sep = (rest == "") and "" or ","
redis.call("HSET", KEYS[1], ARGV[2], '{"beat_ms":' .. now .. sep .. rest .. "}")
if redis.call("PTTL", KEYS[1]) < 0 then
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[1]))
end
return now
"""

# KEYS: nodes zset.  ARGV: ttl ms.  Drops names silent for the ttl and
# returns the others.
_LIVE = NOW_MS_LUA + """
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now - tonumber(ARGV[1]))
return redis.call("ZRANGE", KEYS[1], 0, -1)
"""


@dataclass(frozen=True)
class Node:
    """A live node as its processes last described it."""

    name: str
    info: dict[str, Any]
    #: One entry per live process, keyed by pid (as a string).
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def active(self) -> list[dict[str, Any]]:
        """The tasks the node's processes are running."""
        return [task for proc in self.processes.values() for task in proc.get("active", [])]

    @property
    def reserved(self) -> list[dict[str, Any]]:
        """The messages the node holds but has not started."""
        return [task for proc in self.processes.values() for task in proc.get("reserved", [])]

    def total(self, counter: str) -> int:
        """Sum of one counter (``processed``, ``failed``, ``retried`` ...) over the processes."""
        return sum(int(proc.get(counter, 0)) for proc in self.processes.values())


def _ttl_ms(interval_s: float) -> int:
    return max(1, int(interval_s * MISSED_BEATS * 1000))


def _state_json(state: dict[str, Any]) -> str:
    # beat_ms is the script's to write (Redis's clock).
    return json.dumps({k: v for k, v in state.items() if k != "beat_ms"})


def beat(client: redis.Redis, name: str, *, info: dict[str, Any] | None = None,
         processes: dict[int, dict[str, Any]] | None = None, interval_s: float = INTERVAL_S) -> int:
    """Record that node ``name`` is alive: its ``info`` and/or its processes' states.

    Only the node's main process calls this; its other processes call
    :func:`beat_process`.

    Returns:
      The beat's time in ms of Redis's clock.
    """
    args: list[str] = [name, str(_ttl_ms(interval_s)), "" if info is None else json.dumps(info)]
    for pid, state in (processes or {}).items():
        args += [f"proc:{pid}", _state_json(state)]
    return int(client.eval(_BEAT, 2, NODES, node_key(name), *args))


def beat_process(client: redis.Redis, name: str, pid: int, state: dict[str, Any], *,
                 interval_s: float = INTERVAL_S) -> int:
    """Record one process's state under node ``name`` without keeping the node alive.

    Returns:
      The beat's time in ms of Redis's clock.
    """
    return int(client.eval(_BEAT_PROCESS, 1, node_key(name), str(_ttl_ms(interval_s)), f"proc:{pid}",
                           _state_json(state)))


def leave(client: redis.Redis, name: str, pid: int | None = None) -> None:
    """A clean exit: forget one process of the node, or the whole node when ``pid`` is None."""
    if pid is not None:
        client.hdel(node_key(name), f"proc:{pid}")
        return
    with client.pipeline() as pipe:
        pipe.delete(node_key(name))
        pipe.zrem(NODES, name)
        pipe.execute()


def live_nodes(client: redis.Redis, *, interval_s: float = INTERVAL_S) -> list[Node]:
    """The nodes that beat within the last ``MISSED_BEATS`` intervals, by name."""
    names = [n.decode() if isinstance(n, bytes) else n for n in client.eval(_LIVE, 1, NODES, str(_ttl_ms(interval_s)))]
    if not names:
        return []
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(node_key(name))
        hashes = pipe.execute()
    nodes = []
    for name, fields in zip(names, hashes, strict=True):
        if not fields:
            continue  # expired between the two reads
        decoded = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}
        info = _load(decoded.get("info"))
        processes = {k[len("proc:"):]: _load(v) for k, v in decoded.items() if k.startswith("proc:")}
        nodes.append(Node(name=name, info=info, processes=processes))
    return sorted(nodes, key=lambda n: n.name)


def _load(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
