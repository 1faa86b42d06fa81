"""Records each task's lifecycle for the monitor, in batches off the hot path.

The hooks only append an event to an in-process buffer; a background
thread writes the buffer every :data:`FLUSH_INTERVAL_S` in Redis
calls of :data:`FLUSH_CHUNK` events (:func:`actors.task_history.write_events`), and once more when
the worker shuts down (or, briefly, before a cold exit by
:func:`actors.hard_exit.exit_now`).  Flushes never overlap.  A task never waits on Redis for its history.
While Redis cannot be reached the buffer keeps at most
:data:`MAX_BUFFERED` events and drops the oldest (the history is an
operator's aid, never worth a worker's memory).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from dramatiq import Middleware

from actors import hard_exit, task_history
from actors.busy import REQUEUED_AS
from actors.task_history import TaskEvent, clip

__all__ = ["TaskHistory", "FLUSH_INTERVAL_S", "FLUSH_CHUNK", "MAX_BUFFERED", "MAX_BUFFERED_BYTES", "ARG_CHARS",
           "ERROR_CHARS", "event_size"]

#: Seconds between two writes of the buffered events.
FLUSH_INTERVAL_S = 0.5

#: Most events written in one step.  A busy process buffers thousands
#: between two flushes: writing them all at once would hold every argument
#: and answer in memory, and a worker's RSS keeps such a peak for good
#: (15-40 MiB per process in a drain).  One step is one Lua call of
#: :func:`actors.task_history.write_events`, so a failure leaves exactly the
#: unwritten steps for the next flush (a larger chunk, split into several
#: calls there, would write its first calls twice).
FLUSH_CHUNK = task_history.EVENTS_PER_CALL

#: Most events buffered while Redis cannot be reached ...
MAX_BUFFERED = 10_000

#: ... and most bytes of their text (args, errors, tracebacks: up to ~40 KB an event).
MAX_BUFFERED_BYTES = 32 * 1024 * 1024

#: Longest args/kwargs/result text kept per task, in characters.
ARG_CHARS = 1_000

#: Longest error and traceback text kept per task, in characters.
ERROR_CHARS = 20_000

logger = logging.getLogger(__name__)


def event_size(event: TaskEvent) -> int:
    """About how many bytes an event holds (its text fields, plus a fixed part)."""
    return 200 + sum(len(v) for v in event.fields.values() if isinstance(v, str))


class TaskHistory(Middleware):
    """Buffers task events and flushes them to Redis from a background thread.

    Parameters:
      max_tasks: the history keeps at most this many tasks ...
      ttl_s: ... and none older than this (seconds).
      flush_interval_s: seconds between two flushes.
    """

    def __init__(self, *, max_tasks: int, ttl_s: float, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.max_tasks = int(max_tasks)
        self.ttl_s = float(ttl_s)
        self.flush_interval_s = float(flush_interval_s)
        self._lock = threading.Lock()
        self._buffer: list[TaskEvent] = []
        self._buffer_bytes = 0
        self._name: str | None = None
        self._started: dict[str, float] = {}
        self._client: redis.Redis | None = None
        self._broker: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._flush_lock = threading.Lock()
        self._exit_hooks: contextlib.ExitStack | None = None
        self.dropped = 0

    # -- hooks -------------------------------------------------------------

    def after_worker_boot(self, broker, worker):
        self._client, self._broker = broker.client, broker
        self._name = None
        self._stop.clear()
        # A cold shutdown or a replaced process leaves by os._exit, skipping
        # after_worker_shutdown: write what is buffered first, briefly.
        self._exit_hooks = contextlib.ExitStack()
        self._exit_hooks.enter_context(hard_exit.registered(self._flush_before_exit))
        self._thread = threading.Thread(target=self._run, name="task-history", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker, worker):
        self._stop.set()
        if self._thread is not None:
            # The thread writes the last batch itself; flushes never overlap
            # (the flush lock), so a late one cannot overwrite a newer state.
            self._thread.join(5)
            self._thread = None
        self.flush(wait_s=5)
        if self._exit_hooks is not None:
            self._exit_hooks.close()
            self._exit_hooks = None

    def before_process_message(self, broker, message):
        now = time.time()
        with self._lock:
            self._started[message.message_id] = time.monotonic()
        fields = {
            "state": "STARTED", "received": now, "started": now, "queue": message.queue_name,
            "routing_key": message.queue_name, "args": clip(list(message.args), ARG_CHARS),
            "kwargs": clip(dict(message.kwargs), ARG_CHARS), "retries": int(message.options.get("retries", 0)),
            "eta": None,
        }
        worker = self._worker_name(broker)
        self._add(TaskEvent(message.message_id, message.actor_name, "task-received", worker, now, {}))
        self._add(TaskEvent(message.message_id, message.actor_name, "task-started", worker, now, fields))

    def after_process_message(self, broker, message, *, result=None, exception=None):
        now = time.time()
        with self._lock:
            began = self._started.pop(message.message_id, None)
        if getattr(message, "abandoned", False):
            # Given up at the hard limit and recorded then (record_abandoned): a late
            # return of the blocked thread is no second outcome.
            return
        runtime = None if began is None else time.monotonic() - began
        fields: dict[str, Any] = {"runtime": runtime}
        if exception is None and message.options.get(REQUEUED_AS):
            # Its conversation was busy: sent again as a new message (actors.busy), which is no
            # success (it would push real history out and skew the failure ratio).
            kind = "task-requeued"
            fields.update(state="REQUEUED", requeued=now, requeued_as=message.options[REQUEUED_AS])
        elif exception is None:
            kind = "task-succeeded"
            fields.update(state="SUCCESS", succeeded=now, result=clip(result, ARG_CHARS))
        else:
            error = message.options.get("error") or repr(exception)
            fields.update(exception=clip(error, ERROR_CHARS),
                          traceback=clip(message.options.get("traceback") or "", ERROR_CHARS))
            if message.failed:
                kind = "task-failed"
                fields.update(state="FAILURE", failed=now)
            else:
                kind = "task-retried"
                fields.update(state="RETRY", retried=now, retries=int(message.options.get("retries", 0)))
        self._add(TaskEvent(message.message_id, message.actor_name, kind, self._worker_name(broker), now, fields,
                            runtime_s=runtime))

    def after_skip_message(self, broker, message):
        now = time.time()
        with self._lock:
            self._started.pop(message.message_id, None)
        self._add(TaskEvent(message.message_id, message.actor_name, "task-rejected", self._worker_name(broker), now,
                            {"state": "REJECTED", "rejected": now}))

    def record_abandoned(self, broker, message, outcome: str, exception: BaseException) -> None:
        """Record the end of a task that could not be stopped (or whose process died).

        Called by :func:`actors.abandoned.fail_held` after the retry decision, from a
        process that may exit right away (or a supervisor with no flusher), so it
        writes at once: this is the rare path, never the hot one.
        """
        if outcome not in ("retried", "failed"):
            return
        now = time.time()
        with self._lock:
            self._started.pop(message.message_id, None)
        fields: dict[str, Any] = {
            "exception": clip(message.options.get("error") or repr(exception), ERROR_CHARS),
            "traceback": clip(message.options.get("traceback") or "", ERROR_CHARS),
        }
        if outcome == "failed":
            kind, fields = "task-failed", {**fields, "state": "FAILURE", "failed": now}
        else:
            kind = "task-retried"
            fields.update(state="RETRY", retried=now, retries=int(message.options.get("retries", 0)))
        # Written at once, behind whatever this process buffered for the task
        # (its start), so the end is the last state written.
        self._add(TaskEvent(message.message_id, message.actor_name, kind, self._worker_name(broker), now, fields))
        self.flush(client=broker.client, wait_s=5)

    # -- buffer ------------------------------------------------------------

    def _worker_name(self, broker) -> str:
        if self._name is not None:
            return self._name
        from actors.middleware.node_state import NodeState

        node_states = [m for m in broker.middleware if isinstance(m, NodeState)]
        for m in node_states:
            if m.node_name:
                self._name = m.node_name  # a node keeps its name: look it up once
                return self._name
        # A Worker started by a program or a test is no node: name it by process.
        name = f"pid{os.getpid()}@{socket.gethostname()}"
        if not node_states:
            self._name = name
        return name

    def _add(self, event: TaskEvent) -> None:
        with self._lock:
            self._buffer.append(event)
            self._buffer_bytes += event_size(event)
            self._bound()

    def _bound(self) -> None:
        """Drop the oldest events beyond the count and byte bounds (the lock held)."""
        drop = max(0, len(self._buffer) - MAX_BUFFERED)
        freed = sum(event_size(e) for e in self._buffer[:drop])
        while self._buffer_bytes - freed > MAX_BUFFERED_BYTES and drop < len(self._buffer) - 1:
            freed += event_size(self._buffer[drop])
            drop += 1
        if drop:
            del self._buffer[:drop]
            self._buffer_bytes -= freed
            self.dropped += drop

    def flush(self, *, client: redis.Redis | None = None, wait_s: float | None = None) -> int:
        """Write the buffered events, :data:`FLUSH_CHUNK` per Lua call; returns how many went.

        Flushes are serialised: two batches never race, so a later state
        cannot be overwritten by an earlier one.  ``wait_s`` bounds the wait
        for a flush under way (None: as long as it takes).  Counting is at
        least once: a batch whose write failed after Redis applied it (a
        connection lost before the answer) is written again; the chunks
        written before a failure are not.
        """
        if not self._flush_lock.acquire(timeout=-1 if wait_s is None else wait_s):
            return 0
        try:
            with self._lock:
                batch, self._buffer = self._buffer, []
                batch_bytes, self._buffer_bytes = self._buffer_bytes, 0
            client = client or self._client
            if not batch or client is None:
                with self._lock:
                    self._buffer[:0] = batch
                    self._buffer_bytes += batch_bytes
                return 0
            written = 0
            try:
                while written < len(batch):
                    chunk = batch[written:written + FLUSH_CHUNK]
                    task_history.write_events(client, chunk, max_tasks=self.max_tasks, ttl_s=self.ttl_s)
                    written += len(chunk)
            except redis.RedisError as e:
                rest = batch[written:]
                with self._lock:
                    # Keep the rest for the next try, in order, within the bounds.
                    self._buffer[:0] = rest
                    self._buffer_bytes += sum(event_size(event) for event in rest)
                    self._bound()
                if not self._failing:
                    logger.warning("Could not write the task history: %s; keeping %d event(s) for later.", e,
                                   len(rest))
                self._failing = True
                return written
            self._failing = False
            return written
        finally:
            self._flush_lock.release()

    def _flush_before_exit(self) -> None:
        self.flush(wait_s=1)

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.flush_interval_s)
            try:
                self.flush()
            except Exception:
                logger.critical("Unexpected failure of the task history writer.", exc_info=True)
            if stopping:
                return
