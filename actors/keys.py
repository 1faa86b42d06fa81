"""Every Redis key the queue infrastructure uses, one helper each.

Two keys live at the top level because the runbook reads them with
``redis-cli LLEN``: ``celery`` (the waiting messages of the ``default``
queue) and ``state``.  Everything else lives under ``dramatiq:``.
"""

from __future__ import annotations

__all__ = [
    "NAMESPACE",
    "canonical_queue",
    "queue_key",
    "delayed_key",
    "wake_key",
    "dead_key",
    "dead_messages_key",
    "inflight_key",
    "inflight_index_key",
    "INFLIGHT_INDEX_PREFIX",
    "held_key",
    "HELD_PREFIX",
    "HEARTBEATS",
    "beat_lease_key",
    "beat_run_key",
    "beat_dead_seen_key",
    "MONITOR_PREFIX",
    "task_index_key",
    "task_record_key",
    "task_events_key",
    "task_runtime_key",
    "queue_samples_key",
]

#: Prefix of every broker key but the runbook's queue lists.
NAMESPACE = "dramatiq"

#: Queue names that mean the same queue.  Celery's default queue is
#: called ``celery``; the task table calls it ``default``.
_ALIASES = {"celery": "default"}

#: The Redis list that holds the waiting messages of a queue.
_LIST_KEYS = {"default": "celery"}

#: Sorted set of worker processes (broker ids) scored by their last
#: heartbeat, in milliseconds since the epoch.
HEARTBEATS = f"{NAMESPACE}:heartbeats"

#: Prefix of the per-process hash that maps queue keys to in-flight keys.
INFLIGHT_INDEX_PREFIX = f"{NAMESPACE}:inflight-index."


#: Prefix of the per-process hash of the locks it holds (see :func:`held_key`).
HELD_PREFIX = f"{NAMESPACE}:held."


def canonical_queue(name: str) -> str:
    """The queue's name as actors declare it (``celery`` -> ``default``)."""
    return _ALIASES.get(name, name)


def queue_key(queue: str) -> str:
    """The list of waiting messages (``LLEN`` counts exactly those)."""
    queue = canonical_queue(queue)
    return _LIST_KEYS.get(queue, queue)


def delayed_key(queue: str) -> str:
    """Sorted set of delayed messages (retries, countdown, eta) scored by eta in ms."""
    return f"{NAMESPACE}:{canonical_queue(queue)}.delayed"


def wake_key() -> str:
    """List pushed to when a delayed message becomes the earliest one."""
    return f"{NAMESPACE}:delayed.wake"


def dead_key(queue: str) -> str:
    """Sorted set of dead-lettered message ids scored by failure time in ms."""
    return f"{NAMESPACE}:{canonical_queue(queue)}.dead"


def dead_messages_key(queue: str) -> str:
    """Hash of dead-lettered message id -> JSON record (message, error, traceback)."""
    return f"{NAMESPACE}:{canonical_queue(queue)}.dead.msgs"


def inflight_key(queue: str, broker_id: str) -> str:
    """List of the messages one worker process holds from one queue."""
    return f"{NAMESPACE}:{canonical_queue(queue)}.inflight.{broker_id}"


def inflight_index_key(broker_id: str) -> str:
    """Hash queue key -> in-flight key of one worker process (used to recover it)."""
    return f"{INFLIGHT_INDEX_PREFIX}{broker_id}"


def held_key(broker_id: str) -> str:
    """Hash lock key -> token of the locks one worker process holds (conversation
    locks, :mod:`app.lock`).  When the broker gives up on the process (its
    supervisor saw it die, the sweep found it silent, it left), each lock still
    holding the recorded token is deleted with the messages given back."""
    return f"{HELD_PREFIX}{broker_id}"


def beat_lease_key() -> str:
    """String: the token of the ``celery beat`` process that fires the periodic jobs."""
    return f"{NAMESPACE}:beat:lease"


def beat_run_key(job: str) -> str:
    """String: the last period a periodic job ran for."""
    return f"{NAMESPACE}:beat:ran:{job}"


def beat_dead_seen_key(queue: str) -> str:
    """String: how many dead letters ``queue`` had at the last queue check."""
    return f"{NAMESPACE}:beat:dead-seen:{canonical_queue(queue)}"


#: Prefix of the monitor's keys: task history, its counters, queue samples.
MONITOR_PREFIX = f"{NAMESPACE}:monitor"


def task_index_key() -> str:
    """Sorted set of task ids in the history, scored by their last event (ms)."""
    return f"{MONITOR_PREFIX}:tasks"


def task_state_index_key(state: str) -> str:
    """Sorted set of the history's task ids in one state (``SUCCESS`` ...), scored by their last change (ms)."""
    return f"{MONITOR_PREFIX}:tasks:state:{state}"


def task_record_key(task_id: str) -> str:
    """Hash of one task's history record (field -> JSON value); expires with the history's age bound."""
    return f"{MONITOR_PREFIX}:task:{task_id}"


def task_events_key() -> str:
    """Hash of event counters (``flower_events_total``): JSON ``[task, type, worker]`` -> count."""
    return f"{MONITOR_PREFIX}:events"


def task_runtime_key() -> str:
    """Hash of the runtime histogram: JSON ``[task, worker, bucket]`` -> count (bucket ``sum`` holds seconds)."""
    return f"{MONITOR_PREFIX}:runtime"


def task_workers_key() -> str:
    """Sorted set of the worker names the history's counters hold, scored by their last event (ms)."""
    return f"{MONITOR_PREFIX}:workers"


def queue_samples_key(queue: str) -> str:
    """List of recent size samples of a queue (JSON), newest first, kept short by the monitor."""
    return f"{MONITOR_PREFIX}:samples:{canonical_queue(queue)}"
