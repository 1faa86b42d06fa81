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
the runtime histogram's buckets) are hashes that only grow while their
worker records events, so the monitor exports monotonic counters across
its own restarts; a worker with no event within the age bound has its
fields dropped (worker names change with every restart), so the hashes
do not grow without bound either.

A batch of events is written in one pipeline (one round trip), never one
call per task: :class:`actors.middleware.TaskHistory` buffers them.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from actors import keys
from actors.lua import script_source
from actors.names import CELERY_APP, celery_name

__all__ = ["RUNTIME_BUCKETS_S", "TaskEvent", "write_events", "get_task", "get_tasks", "all_tasks", "event_counts",
           "runtime_histograms", "RuntimeHistogram", "bucket_of", "clip", "TaskFilter", "find", "columns",
           "LIST_FIELDS", "MAX_PAGE", "recent_workers"]

#: The fields read to filter and sort the history: everything but the
#: traceback (up to 20,000 characters each), which only a task's own page
#: and the page of results show.
LIST_FIELDS = ("uuid", "name", "state", "received", "sent", "started", "rejected", "succeeded", "failed", "retried",
               "revoked", "args", "kwargs", "eta", "expires", "retries", "result", "exception", "timestamp",
               "runtime", "routing_key", "queue", "worker")

#: The states a worker records; each has an index of its ids, so a state filter reads one page.
HISTORY_STATES = ("RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REJECTED", "REQUEUED")

#: The fields ``search`` looks in.
SEARCHED_FIELDS = ("uuid", "name", "args", "kwargs", "result", "exception", "worker", "state")

#: Most tasks one query answers (``/api/tasks`` without a limit answers this many).
MAX_PAGE = 1000

#: Most events written by one Lua call (about a millisecond of Redis's time, so that a
#: flush on a busy worker never holds up the start of an urgent task for long).
EVENTS_PER_CALL = 300

#: Upper bounds of the runtime histogram's buckets, in seconds (prometheus_client's
#: defaults, which Flower uses too); +Inf is implied.
RUNTIME_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

#: ``record_history.lua`` and ``trim_history.lua`` with the shared helpers: one EVALSHA per batch.
_RECORD = script_source("record_history", "trim_history")

#: ``history_search.lua``: filters the history in Redis.
_SEARCH = script_source("history_search")


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
    """Write a batch of events and apply the bounds, in one Lua call.

    The events of one task in a batch (its received, started and finished,
    as a busy worker flushes them together) are folded into one record
    write, later fields over earlier ones, and the counters into one
    increment per distinct label set: what Redis holds afterwards is what
    writing them one by one in order would leave, for a fraction of the
    commands.  The batch travels as one JSON argument (the record values
    already JSON texts, as the monitor reads them): a drain of no-op tasks
    spent a quarter of its time here, most of it packing a pipeline's
    arguments.

    A long batch (events buffered while Redis was away) goes in slices of
    :data:`EVENTS_PER_CALL`, so no single call holds Redis up for long.

    Raises:
      redis.RedisError: Redis could not be reached (the caller keeps the batch).
    """
    for start in range(0, len(events), EVENTS_PER_CALL):
        _write_slice(client, events[start:start + EVENTS_PER_CALL], max_tasks=max_tasks, ttl_s=ttl_s)


def _write_slice(client: redis.Redis, events: Sequence[TaskEvent], *, max_tasks: int, ttl_s: float) -> None:
    ttl_ms = max(1, int(ttl_s * 1000))
    records: dict[str, dict[str, Any]] = {}
    last_ms: dict[str, int] = {}
    #: task id -> (state, ms) of its last event that set a state
    states: dict[str, tuple[str, int]] = {}
    counts: Counter[tuple[str, str, str]] = Counter()
    buckets: Counter[tuple[str, str, str]] = Counter()
    sums: defaultdict[tuple[str, str], float] = defaultdict(float)
    workers: dict[str, int] = {}
    for event in events:
        at_ms = int(event.at_s * 1000)
        record = records.get(event.task_id)
        if record is None:
            record = records[event.task_id] = {}
        record.update(event.fields)
        record.update(uuid=event.task_id, name=event.task, worker=event.worker, timestamp=event.at_s)
        last_ms[event.task_id] = at_ms
        state = event.fields.get("state")
        if state in HISTORY_STATES:
            states[event.task_id] = (state, at_ms)
        counts[(event.task, event.kind, event.worker)] += 1
        if event.runtime_s is not None:
            buckets[(event.task, event.worker, bucket_of(event.runtime_s))] += 1
            sums[(event.task, event.worker)] += event.runtime_s
        workers[event.worker] = max(at_ms, workers.get(event.worker, at_ms))

    tasks = []
    for task_id, record in records.items():
        fields: list[str] = []
        for name, value in record.items():
            fields += (name, _json(value))
        state, state_ms = states.get(task_id, ("", 0))
        tasks.append((task_id, str(last_ms[task_id]), state, str(state_ms), fields))
    batch = {
        "states": HISTORY_STATES,
        "tasks": tasks,
        "counts": [(json.dumps(list(labels)), str(n)) for labels, n in counts.items()],
        "buckets": [(json.dumps(list(labels)), str(n)) for labels, n in buckets.items()],
        "sums": [(json.dumps([*labels, "sum"]), repr(total)) for labels, total in sums.items()],
        "workers": [part for worker, ms in workers.items() for part in (str(ms), worker)],
    }
    _record_script(client)(
        keys=[keys.task_index_key(), keys.task_workers_key(), keys.task_events_key(), keys.task_runtime_key(),
              *(keys.task_state_index_key(state) for state in HISTORY_STATES)],
        args=[max_tasks, ttl_ms, keys.task_record_key(""), json.dumps(batch)], client=client)


_encode_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_encoder = json.JSONEncoder(default=repr)
_plain = {type(None): lambda _: "null", int: int.__repr__, str: _encode_str}


def _json(value: Any) -> str:
    """``json.dumps(value, default=repr)``, without building an encoder per call, and with
    shortcuts for the plain values most fields hold (a record has about sixteen)."""
    kind = type(value)
    if kind is float:
        return float.__repr__(value) if value - value == 0 else _encoder.encode(value)
    encode = _plain.get(kind)
    return encode(value) if encode is not None else _encoder.encode(value)


_record: Any = None


def _record_script(client: redis.Redis) -> Any:
    """``record_history.lua`` then ``trim_history.lua`` as one Script, made once (making one
    hashes the source); it runs on whatever client it is given."""
    global _record
    if _record is None:
        _record = client.register_script(_RECORD)
    return _record


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


def columns(client: redis.Redis, ids: Sequence[str], *, fields: Sequence[str] = LIST_FIELDS,
            chunk: int = 1000) -> list[dict[str, Any]]:
    """The ``fields`` of the records of ``ids`` the history holds, in that order (``HMGET``, no traceback)."""
    rows: list[dict[str, Any]] = []
    for start in range(0, len(ids), chunk):
        with client.pipeline(transaction=False) as pipe:
            for task_id in ids[start:start + chunk]:
                pipe.hmget(keys.task_record_key(task_id), list(fields))
            for values in pipe.execute():
                raw = {f: v for f, v in zip(fields, values, strict=True) if v is not None}
                if raw.get("uuid") is not None:  # else it expired between the two reads
                    rows.append(_decode_record(raw))
    return rows


@dataclass(frozen=True)
class TaskFilter:
    """The filters of ``/tasks`` and ``/api/tasks`` (Flower's parameter names)."""

    state: str | None = None
    taskname: str | None = None
    workername: str | None = None
    search: str | None = None

    def fields(self, sort_by: str | None = None) -> tuple[str, ...]:
        """The record fields this filter (and ``sort_by``) reads: only those are fetched for every task."""
        wanted = ["uuid", "timestamp", "eta"]
        if self.state:
            wanted.append("state")
        if self.taskname:
            wanted.append("name")
        if self.workername:
            wanted.append("worker")
        if self.search:
            wanted += SEARCHED_FIELDS
        if sort_by and sort_by.lstrip("-") in LIST_FIELDS:
            wanted.append(sort_by.lstrip("-"))
        return tuple(dict.fromkeys(wanted))

    def accepts(self, task: dict[str, Any]) -> bool:
        if self.state and str(task.get("state") or "") != self.state.upper():
            return False
        if self.taskname:
            name = str(task.get("name") or "")
            if self.taskname not in (name, celery_name(name)):
                return False
        if self.workername and task.get("worker") != self.workername:
            return False
        if self.search:
            needle = self.search.lower()
            haystack = " ".join(str(task.get(k) or "") for k in SEARCHED_FIELDS)
            if needle not in haystack.lower():
                return False
        return True


def _ids(raws: Sequence[Any]) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else str(i) for i in raws]


def find(client: redis.Redis, flt: TaskFilter, *, queued: Sequence[dict[str, Any]] = (), sort_by: str | None = None,
         offset: int = 0, limit: int = MAX_PAGE) -> tuple[int, list[dict[str, Any]]]:
    """(how many tasks match, one page of their records).

    ``queued`` are records of messages still in the broker (waiting or
    delayed): those the history does not hold are listed too, and a
    scheduled retry's ``eta`` is copied onto its record.  The default
    order is newest first; ``sort_by`` names a field, with ``-`` in front
    for descending.  The plain newest page reads only that page's records;
    a filtered or sorted query reads the list columns of the history
    (:data:`LIST_FIELDS`, bounded by ``MONITOR_MAX_TASKS``), and full
    records only for the page it answers.  ``limit`` is at most :data:`MAX_PAGE`.
    """
    limit = max(0, min(limit, MAX_PAGE))
    if not sort_by and flt == TaskFilter():
        return _newest_page(client, queued, offset, limit, keys.task_index_key())
    state = flt.state.upper() if flt.state else None
    if not sort_by and (state is None or state in HISTORY_STATES):
        # filtered in Redis (history_search.lua): only the page's records travel
        index = keys.task_state_index_key(state) if state else keys.task_index_key()
        plain = flt == TaskFilter(state=flt.state)
        return _newest_page(client, [q for q in queued if flt.accepts(q)], offset, limit, index,
                            search=None if plain else flt)
    # only the tasks in the filter's state (its index), when it names one the history holds
    if state in HISTORY_STATES:
        candidates = client.zrevrange(keys.task_state_index_key(state), 0, -1)
    elif state:
        candidates = []  # PENDING: only queued messages
    else:
        candidates = client.zrevrange(keys.task_index_key(), 0, -1)
    rows = columns(client, _ids(candidates), fields=flt.fields(sort_by))
    known = {r["uuid"]: r for r in rows}
    merged = list(rows)
    for entry in queued:
        record = known.get(entry["uuid"])
        if record is None:
            merged.append(entry)
        elif entry.get("eta") is not None:
            record["eta"] = entry["eta"]  # a scheduled retry: when it runs next
    found = [t for t in merged if flt.accepts(t)]
    if sort_by:
        key = sort_by.lstrip("-")
        present = [t for t in found if t.get(key) is not None]
        missing = [t for t in found if t.get(key) is None]
        present.sort(key=lambda t: (isinstance(t[key], str), t[key]), reverse=sort_by.startswith("-"))
        found = present + missing
    else:
        found.sort(key=lambda t: float(t.get("timestamp") or 0), reverse=True)
    page = found[offset:offset + limit]
    history = [t["uuid"] for t in page if t["uuid"] in known]
    full = {r.get("uuid"): r for r in get_tasks(client, history)}
    return len(found), [({**full[t["uuid"]], "eta": t.get("eta")} if t["uuid"] in full else t) for t in page
                        if t["uuid"] not in known or t["uuid"] in full]


#: Ids one call of ``history_search.lua`` reads (each call holds Redis for a few milliseconds).
SEARCH_SLICE = 500


def _search(client: redis.Redis, index: str, flt: TaskFilter, wanted: int) -> tuple[int, list[tuple[Any, float]]]:
    """(how many ids of ``index`` match ``flt``'s name, worker and text, the first ``wanted`` with scores).

    Run in Redis slice by slice; an id that moves while the walk goes on
    may be seen twice (counted once) or missed: a monitor's view, not an audit.
    """
    script = client.register_script(_SEARCH)
    args = [keys.task_record_key(""), flt.taskname or "", CELERY_APP + ".", flt.workername or "",
            (flt.search or "").lower()]
    total, seen = 0, set()
    top: list[tuple[Any, float]] = []
    first = 0
    while True:
        read, _matches, *flat = script(keys=[index], args=[*args, first, SEARCH_SLICE, SEARCH_SLICE,
                                                           *SEARCHED_FIELDS])
        for i in range(0, len(flat), 2):
            if flat[i] not in seen:
                seen.add(flat[i])
                total += 1
                if len(top) < wanted:
                    top.append((flat[i], float(flat[i + 1])))
        if int(read) < SEARCH_SLICE:
            return total, top
        first += SEARCH_SLICE


def _newest_page(client: redis.Redis, queued: Sequence[dict[str, Any]], offset: int, limit: int,
                 index: str, *, search: TaskFilter | None = None) -> tuple[int, list[dict[str, Any]]]:
    """The newest page of ``index`` (the history's, or one state's) merged with ``queued``;
    with ``search``, of the ids of ``index`` whose records match its name, worker and text."""
    with client.pipeline(transaction=False) as pipe:
        for entry in queued:
            pipe.zscore(keys.task_index_key(), entry["uuid"])
        if search is None:
            pipe.zcard(index)
            pipe.zrevrange(index, 0, offset + limit - 1, withscores=True)
        results = pipe.execute()
    scores = results[:len(queued)]
    if search is None:
        total_history, top = results[len(queued):]
    else:
        total_history, top = _search(client, index, search, offset + limit)
    etas = {q["uuid"]: q["eta"] for q in queued if q.get("eta") is not None}
    only_queued = [q for q, score in zip(queued, scores, strict=True) if score is None]
    merged: list[tuple[float, str, Any]] = [(score / 1000, "history", raw_id) for raw_id, score in top]
    merged += [(float(q.get("timestamp") or 0), "queued", q) for q in only_queued]
    merged.sort(key=lambda item: item[0], reverse=True)
    page = merged[offset:offset + limit]
    records = {r.get("uuid"): r for r in get_tasks(client, _ids([i for _, kind, i in page if kind == "history"]))}
    found = []
    for _, kind, item in page:
        if kind == "queued":
            found.append(item)
            continue
        record = records.get(_ids([item])[0])
        if record is not None:  # else it expired between the two reads
            found.append({**record, "eta": etas.get(record.get("uuid"), record.get("eta"))})
    return int(total_history) + len(only_queued), found


def recent_workers(client: redis.Redis) -> set[str]:
    """The workers with an event within the history's age bound (the counters hold only theirs)."""
    return set(_ids(client.zrange(keys.task_workers_key(), 0, -1)))


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


_BRACKETS: dict[type, tuple[str, str]] = {list: ("[", "]"), tuple: ("(", ")"), set: ("{", "}"),
                                          frozenset: ("frozenset({", "})")}


class _Full(Exception):
    """The clipped text has reached its limit."""


def _bounded_repr(value: Any, budget: int) -> str:
    """``repr(value)`` up to about ``budget`` characters, built piece by piece and stopped there:
    a 2 MB argument costs what its first ``budget`` characters cost."""
    parts: list[str] = []
    left = budget + 1

    def emit(text: str) -> None:
        nonlocal left
        parts.append(text[:left])
        left -= len(text)
        if left <= 0:
            raise _Full

    def walk(v: Any, depth: int) -> None:
        if isinstance(v, str):
            emit(repr(v[:left]))
        elif isinstance(v, bytes):
            emit(repr(v[:left]))
        elif type(v) in (list, tuple, set, frozenset) and depth < 20:
            if not v:
                emit(repr(v))
                return
            opening, closing = _BRACKETS[type(v)]
            emit(opening)
            for i, item in enumerate(v):
                if i:
                    emit(", ")
                walk(item, depth + 1)
            emit("," + closing if type(v) is tuple and len(v) == 1 else closing)
        elif type(v) is dict and depth < 20:
            emit("{")
            for i, (k, item) in enumerate(v.items()):
                if i:
                    emit(", ")
                walk(k, depth + 1)
                emit(": ")
                walk(item, depth + 1)
            emit("}")
        else:
            emit(repr(v))

    try:
        walk(value, 0)
    except _Full:
        pass
    return "".join(parts)


def clip(value: Any, limit: int) -> str:
    """``repr`` of ``value`` cut to ``limit`` characters (args, kwargs and results are untrusted and unbounded).

    Only about ``limit`` characters are ever built (containers and strings
    are walked and cut as they go), never the whole ``repr`` first.
    """
    text = value[: limit + 1] if isinstance(value, str) else _bounded_repr(value, limit)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"
