"""One INFO line when a task starts and one when it succeeds, in Celery's words.

Failures and retries are logged by :class:`actors.middleware.FixedRetries`,
which knows what happens next.  The task's name and id are also bound to
a context variable that :class:`TaskContextFilter` adds to log records.
"""

from __future__ import annotations

import contextvars
import logging
import time

from dramatiq import Middleware

from actors.names import celery_name

__all__ = ["TaskLog", "TaskContextFilter", "current_task"]

#: (task name, task id) of the task the current thread runs, or None.
current_task: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("current_task", default=None)


class TaskContextFilter(logging.Filter):
    """Adds ``task_name`` and ``task_id`` to every record (``-`` outside tasks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        name, task_id = current_task.get() or ("-", "-")
        record.task_name = name
        record.task_id = task_id
        return True


class TaskLog(Middleware):
    """Logs ``Task <name>[<id>] received`` and ``... succeeded in <s>s: <result>``."""

    def __init__(self) -> None:
        # Celery's logger names, so the runbook's log filters keep working.
        self.logger = logging.getLogger("celery.worker.strategy")
        self.trace_logger = logging.getLogger("celery.app.trace")
        self._started: dict[str, float] = {}

    def before_process_message(self, broker, message):
        current_task.set((message.actor_name, message.message_id))
        self._started[message.message_id] = time.perf_counter()
        self.logger.info("Task %s[%s] received", celery_name(message.actor_name), message.message_id)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        started = self._started.pop(message.message_id, None)
        if exception is None and started is not None:
            runtime = time.perf_counter() - started
            self.trace_logger.info(
                "Task %s[%s] succeeded in %rs: %r", celery_name(message.actor_name), message.message_id, runtime, result
            )
        current_task.set(None)

    def after_skip_message(self, broker, message):
        self._started.pop(message.message_id, None)
        current_task.set(None)
