"""The monitor's task history in Redis: written by the workers, read by the monitor.

Each task has a hash (:func:`actors.keys.task_record_key`) whose fields hold
JSON values in Flower's vocabulary (``uuid``, ``name``, ``state``,
``received``, ``started``, ``succeeded``, ``failed``, ``retried``,
``runtime``, ``retries``, ``exception``, ``traceback``, ``worker`` ...),
and a sorted set indexes the ids by their last event.  The history is
bounded twice: every record expires after the age bound, and each write
drops the oldest ids beyond the count bound (with their hashes), so it
survives a monitor restart and never grows without bound.

The counters behind Flower's ``/metrics`` (events by task, type and worker;
the runtime histogram's buckets) are hashes that only grow, so the monitor
exports monotonic counters across its own restarts.

A batch of events is written in one pipeline (one round trip), never one
call per task: :class:`actors.middleware.TaskHistory` buffers them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from actors import keys

__all__ = ["RUNTIME_BUCKETS_S", "TaskEvent", "write_events", "get_task", "get_tasks", "all_tasks", "event_counts",
           "runtime_histograms", "RuntimeHistogram", "bucket_of", "clip"]

#: Upper bounds of the runtime histogram's buckets, in seconds (prometheus_client's
#: defaults, which Flower uses too); +Inf is implied.
RUNTIME_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# KEYS[1] index zset.  ARGV[1] most tasks kept, ARGV[2] age bound in ms.
# Drops ids older than the age bound and the oldest beyond the count, with
# their records.  Returns how many went.
_TRIM = """
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now - tonumber(ARGV[2]))
local n = redis.call("ZCARD", KEYS[1]) - #gone - tonumber(ARGV[1])
if n > 0 then
  local extra = redis.call("ZRANGE", KEYS[1], #gone, #gone + n - 1)
  for i = 1, #extra do gone[#gone + 1] = extra[i] end
end
for i = 1, #gone do
  redis.call("DEL", ARGV[3] .. gone[i])
  redis.call("ZREM", KEYS[1], gone[i])
end
return #gone
"""


@dataclass
class TaskEvent:
    """One lifecycle event of a task, as a worker saw it.

    Attributes:
      task_id: the message id (Flower's ``uuid``).
      task: the runbook's task name (``process_message_task``).
      kind: Flower's event type (``task-received``, ``task-started``,
        ``task-succeeded``, ``task-failed``, ``task-retried``, ``task-rejected``).
      worker: the node name that ran it.
      at_s: when, in seconds since the epoch.
      fields: the record's fields this event sets.
      runtime_s: for a finished run, how long it took.
    """

    task_id: str
    task: str
    kind: str
    worker: str
    at_s: float
    fields: dict[str, Any] = field(default_factory=dict)
    runtime_s: float | None = None


def bucket_of(runtime_s: float) -> str:
    """The histogram bucket a runtime falls in (its upper bound, or ``+Inf``)."""
    for bound in RUNTIME_BUCKETS_S:
        if runtime_s <= bound:
            return repr(bound)
    return "+Inf"


def write_events(client: redis.Redis, events: Sequence[TaskEvent], *, max_tasks: int, ttl_s: float) -> None:
    """Write a batch of events in one pipeline, then apply the bounds.

    Raises:
      redis.RedisError: Redis could not be reached (the caller keeps the batch).
    """
    if not events:
        return
    ttl_ms = max(1, int(ttl_s * 1000))
    with client.pipeline(transaction=True) as pipe:
        for event in events:
            record = keys.task_record_key(event.task_id)
            values = {"uuid": event.task_id, "name": event.task, "worker": event.worker, "timestamp": event.at_s,
                      **event.fields}
            pipe.hset(record, mapping={k: json.dumps(v, default=repr) for k, v in values.items()})
            pipe.pexpire(record, ttl_ms)
            pipe.zadd(keys.task_index_key(), {event.task_id: int(event.at_s * 1000)})
            pipe.hincrby(keys.task_events_key(), json.dumps([event.task, event.kind, event.worker]), 1)
            if event.runtime_s is not None:
                base = [event.task, event.worker]
                pipe.hincrby(keys.task_runtime_key(), json.dumps([*base, bucket_of(event.runtime_s)]), 1)
                pipe.hincrbyfloat(keys.task_runtime_key(), json.dumps([*base, "sum"]), event.runtime_s)
        pipe.eval(_TRIM, 1, keys.task_index_key(), max_tasks, ttl_ms, keys.task_record_key(""))
        pipe.execute()


def _decode_record(raw: dict) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else k
        try:
            record[name] = json.loads(v)
        except ValueError:
            record[name] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return record


def get_task(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    """One task's record, or None when the history does not hold it."""
    raw = client.hgetall(keys.task_record_key(task_id))
    return _decode_record(raw) if raw else None


def all_tasks(client: redis.Redis) -> list[dict[str, Any]]:
    """Every task of the history, newest event first (bounded by ``MONITOR_MAX_TASKS``)."""
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in client.zrevrange(keys.task_index_key(), 0, -1)]
    return get_tasks(client, ids)


def get_tasks(client: redis.Redis, ids: Sequence[str], *, chunk: int = 500) -> list[dict[str, Any]]:
    """The records of ``ids`` that the history holds, in that order."""
    tasks: list[dict[str, Any]] = []
    for start in range(0, len(ids), chunk):
        with client.pipeline(transaction=False) as pipe:
            for task_id in ids[start:start + chunk]:
                pipe.hgetall(keys.task_record_key(task_id))
            tasks.extend(_decode_record(raw) for raw in pipe.execute() if raw)
    return tasks


def event_counts(client: redis.Redis) -> dict[tuple[str, str, str], int]:
    """``(task, type, worker) -> count`` of every event the workers recorded."""
    counts = {}
    for k, v in client.hgetall(keys.task_events_key()).items():
        try:
            task, kind, worker = json.loads(k)
        except ValueError:
            continue
        counts[(str(task), str(kind), str(worker))] = int(v)
    return counts


@dataclass
class RuntimeHistogram:
    """One ``(task, worker)`` runtime histogram: cumulative bucket counts, sum and count."""

    buckets: list[tuple[str, int]]
    sum_s: float
    count: int


def runtime_histograms(client: redis.Redis) -> dict[tuple[str, str], RuntimeHistogram]:
    """The runtime histograms by ``(task, worker)``, with Prometheus's cumulative buckets."""
    raw: dict[tuple[str, str], dict[str, float]] = {}
    for k, v in client.hgetall(keys.task_runtime_key()).items():
        try:
            task, worker, bucket = json.loads(k)
        except ValueError:
            continue
        raw.setdefault((str(task), str(worker)), {})[str(bucket)] = float(v)
    result = {}
    for labels, values in raw.items():
        running = 0
        buckets = []
        for bound in (*map(repr, RUNTIME_BUCKETS_S), "+Inf"):
            running += int(values.get(bound, 0))
            buckets.append((bound, running))
        result[labels] = RuntimeHistogram(buckets=buckets, sum_s=values.get("sum", 0.0), count=running)
    return result


def clip(value: Any, limit: int) -> str:
    """``repr`` of ``value`` cut to ``limit`` characters (args, kwargs and results are untrusted and unbounded)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"

