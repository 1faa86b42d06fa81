"""Celery's task lines, and the one structured line per task start and finish.

``Task <name>[<id>] received`` and ``... succeeded in <s>s: <result>``
come from :class:`TaskLog`; failures and retries are logged by
:class:`actors.middleware.FixedRetries`, which knows what happens next.
These Celery-worded lines carry the task's name, id and queue as record
attributes and nothing more.

The structured lines are :func:`log_started` and :func:`log_finished`
(logger ``actors.tasks``): exactly one of each per task run, the finish
line for every outcome (also a task abandoned at its hard limit), and
only they carry ``event`` (``started``/``finished``) and, on the finish
line, ``duration_s`` and ``outcome``, which the JSON log format
(``LOG_FORMAT=json``, :mod:`actors.worker_logging`) writes out.  The
run's one start time is the :class:`RunningTask` that :func:`begin`
puts on the message proxy; the middleware that time the run (this one,
the node state, the metrics) all read it from there.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any, NamedTuple

from dramatiq import Middleware

from actors.names import celery_name

__all__ = ["TaskLog", "TaskContextFilter", "current_task", "task_fields", "RunningTask", "begin", "elapsed_s",
           "log_started", "log_finished"]

#: The structured start and finish lines.
events = logging.getLogger("actors.tasks")


class RunningTask(NamedTuple):
    name: str
    task_id: str
    queue: str
    #: ``time.perf_counter()`` when it started.
    started: float


#: The task the current thread runs, or None.
current_task: contextvars.ContextVar[RunningTask | None] = contextvars.ContextVar("current_task", default=None)


def begin(message) -> RunningTask:
    """The run of ``message`` (a message proxy): created by the first middleware that asks."""
    running = getattr(message, "running_task", None)
    if running is None:
        running = RunningTask(message.actor_name, message.message_id, message.queue_name, time.perf_counter())
        message.running_task = running
    return running


def elapsed_s(message) -> float | None:
    """Seconds since the run of ``message`` began (None when it has no :func:`begin`)."""
    running = getattr(message, "running_task", None)
    return None if running is None else time.perf_counter() - running.started


def task_fields(message) -> dict[str, Any]:
    """The record attributes of a Celery-worded line about ``message`` (``extra=`` of a logging call)."""
    return {"task_name": message.actor_name, "task_id": message.message_id, "queue": message.queue_name}


def log_started(message) -> None:
    """The structured line that starts a run."""
    if events.isEnabledFor(logging.INFO):
        events.info("task started task=%s id=%s queue=%s", message.actor_name, message.message_id,
                    message.queue_name, extra={**task_fields(message), "event": "started"})


def log_finished(message, outcome: str, duration_s: float | None) -> None:
    """The structured line that ends a run: ``outcome`` and ``duration_s`` (None when unknown)."""
    if events.isEnabledFor(logging.INFO):
        duration = None if duration_s is None else round(duration_s, 6)
        events.info("task finished task=%s id=%s queue=%s duration_s=%s outcome=%s",
                    message.actor_name, message.message_id, message.queue_name,
                    "-" if duration is None else f"{duration:.3f}", outcome,
                    extra={**task_fields(message), "event": "finished", "outcome": outcome, "duration_s": duration})


class TaskContextFilter(logging.Filter):
    """Adds ``task_name``, ``task_id`` and ``queue`` of the running task to every record
    that has none (None outside tasks); also ``event``, ``outcome`` and ``duration_s`` (None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        running = current_task.get()
        if not hasattr(record, "task_name"):
            record.task_name = running.name if running else None
            record.task_id = running.task_id if running else None
            record.queue = running.queue if running else None
        for name in ("event", "outcome", "duration_s"):
            if not hasattr(record, name):
                setattr(record, name, None)
        return True


class TaskLog(Middleware):
    """Logs ``Task <name>[<id>] received`` and ``... succeeded in <s>s: <result>``.

    Parameters:
      log_format: ``text`` or ``json``; applied by this middleware only
        under the plain ``dramatiq`` CLI, whose processes set up their
        own logging (``celery worker`` sets it up itself).
    """

    def __init__(self, *, log_format: str = "text") -> None:
        # Celery's logger names, so the runbook's log filters keep working.
        self.logger = logging.getLogger("celery.worker.strategy")
        self.trace_logger = logging.getLogger("celery.app.trace")
        self.log_format = log_format

    def after_process_boot(self, broker):
        # Emitted by the plain dramatiq CLI in each of its worker processes,
        # after it pointed the root logger at its log pipe.
        from actors.worker_logging import adopt_handlers, batch_pipe_writes

        adopt_handlers(self.log_format)
        batch_pipe_writes()

    def after_worker_shutdown(self, broker, worker):
        from actors.worker_logging import unbatch_pipe_writes

        unbatch_pipe_writes()

    def before_process_message(self, broker, message):
        current_task.set(begin(message))
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info("Task %s[%s] received", celery_name(message.actor_name), message.message_id,
                             extra=task_fields(message))

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None and self.trace_logger.isEnabledFor(logging.INFO):
            runtime = elapsed_s(message)
            if runtime is not None:
                self.trace_logger.info(
                    "Task %s[%s] succeeded in %rs: %r", celery_name(message.actor_name), message.message_id, runtime,
                    result, extra=task_fields(message),
                )
        current_task.set(None)

    def after_skip_message(self, broker, message):
        current_task.set(None)
