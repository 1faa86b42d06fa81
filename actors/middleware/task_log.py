"""One INFO line when a task starts and one when it succeeds, in Celery's words.

Failures and retries are logged by :class:`actors.middleware.FixedRetries`,
which knows what happens next.  The task's name, id, queue and start are
bound to a context variable that :class:`TaskContextFilter` adds to every
log record of the task's thread; the lines that end a task also carry
``duration_s`` and ``outcome`` as record attributes, which the JSON log
format (``LOG_FORMAT=json``, :mod:`actors.worker_logging`) writes out.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any, NamedTuple

from dramatiq import Middleware

from actors.names import celery_name

__all__ = ["TaskLog", "TaskContextFilter", "current_task", "task_fields", "RunningTask"]


class RunningTask(NamedTuple):
    name: str
    task_id: str
    queue: str
    #: ``time.perf_counter()`` when it started.
    started: float


#: The task the current thread runs, or None.
current_task: contextvars.ContextVar[RunningTask | None] = contextvars.ContextVar("current_task", default=None)
#: The task this thread ran last: the retry middleware's ``after`` hook runs
#: after this one's and still logs the run's duration.
_last_task: contextvars.ContextVar[RunningTask | None] = contextvars.ContextVar("last_task", default=None)


def task_fields(message, *, outcome: str | None = None, duration_s: float | None = None,
                measure: bool = True) -> dict[str, Any]:
    """The record attributes of a line about ``message`` (``extra=`` of a logging call).

    With ``measure``, the duration is the running task's when not given
    and ``message`` is the task this thread runs (or just ran).
    """
    running = current_task.get() or _last_task.get()
    if measure and duration_s is None and running is not None and running.task_id == message.message_id:
        duration_s = time.perf_counter() - running.started
    return {
        "task_name": message.actor_name, "task_id": message.message_id, "queue": message.queue_name,
        "outcome": outcome, "duration_s": None if duration_s is None else round(duration_s, 6),
    }


class TaskContextFilter(logging.Filter):
    """Adds ``task_name``, ``task_id`` and ``queue`` of the running task to every record
    that has none (None outside tasks); also ``outcome`` and ``duration_s`` (None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        running = current_task.get()
        if not hasattr(record, "task_name"):
            record.task_name = running.name if running else None
            record.task_id = running.task_id if running else None
            record.queue = running.queue if running else None
        for name in ("outcome", "duration_s"):
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
        from actors.worker_logging import adopt_handlers

        adopt_handlers(self.log_format)

    def before_process_message(self, broker, message):
        current_task.set(RunningTask(message.actor_name, message.message_id, message.queue_name,
                                     time.perf_counter()))
        self.logger.info("Task %s[%s] received", celery_name(message.actor_name), message.message_id,
                         extra=task_fields(message, measure=False))

    def after_process_message(self, broker, message, *, result=None, exception=None):
        running = current_task.get()
        if exception is None and running is not None and running.task_id == message.message_id:
            runtime = time.perf_counter() - running.started
            self.trace_logger.info(
                "Task %s[%s] succeeded in %rs: %r", celery_name(message.actor_name), message.message_id, runtime,
                result, extra=task_fields(message, outcome="succeeded", duration_s=runtime),
            )
        _last_task.set(running)
        current_task.set(None)

    def after_skip_message(self, broker, message):
        current_task.set(None)
