"""Celery's calling API on Dramatiq actors.

``@task(...)`` declares a Dramatiq actor whose class adds ``delay`` and
``apply_async``.  This is the one place where Celery's units become
Dramatiq's: seconds become milliseconds, and the runbook's priority
(0-9, higher = more urgent) becomes Dramatiq's (lower = more urgent).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq

__all__ = ["AsyncResult", "Task", "task", "to_dramatiq_priority", "from_dramatiq_priority", "seconds_to_ms",
           "ms_to_seconds"]

#: Celery's priority range on Redis.
MIN_PRIORITY, MAX_PRIORITY = 0, 9


def to_dramatiq_priority(priority: int) -> int:
    """Runbook priority (higher = more urgent) -> Dramatiq's (lower = more urgent).

    Raises:
      ValueError: outside 0-9 or not a whole number.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}, got {priority!r}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be from {MIN_PRIORITY} to {MAX_PRIORITY}, got {priority}")
    return -priority


def from_dramatiq_priority(priority: int) -> int:
    """The inverse of :func:`to_dramatiq_priority`."""
    return -priority


def seconds_to_ms(seconds: float, *, name: str = "seconds") -> int:
    """Seconds (Celery's unit) -> whole milliseconds (Dramatiq's)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, got {seconds!r}")
    if seconds < 0:
        raise ValueError(f"{name} must not be negative, got {seconds!r}")
    return int(round(seconds * 1000))


def ms_to_seconds(ms: int | float) -> float:
    """Milliseconds (Dramatiq's unit) -> seconds (Celery's)."""
    return ms / 1000


class AsyncResult:
    """What ``delay``/``apply_async`` return: the id of the sent message.

    There is no result backend (the runbook's deployment had none), so
    only the id and the message are available.
    """

    __slots__ = ("id", "message")

    def __init__(self, message: dramatiq.Message) -> None:
        self.id: str = message.message_id
        self.message = message

    @property
    def task_id(self) -> str:
        return self.id

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"


def _delay_ms(countdown: float | None, eta: datetime | None, now: float) -> int | None:
    if countdown is not None and eta is not None:
        raise ValueError("give either countdown or eta, not both")
    if countdown is not None:
        return seconds_to_ms(countdown, name="countdown")
    if eta is not None:
        if not isinstance(eta, datetime):
            raise ValueError(f"eta must be a datetime, got {type(eta).__name__}")
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=UTC)
        return max(0, int(round((eta.timestamp() - now) * 1000)))
    return None


def _expires_ms(expires: float | datetime | timedelta | None, now: float) -> int | None:
    if expires is None:
        return None
    if isinstance(expires, timedelta):
        return seconds_to_ms(expires.total_seconds(), name="expires")
    if isinstance(expires, datetime):
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return max(1, int(round((expires.timestamp() - now) * 1000)))
    return max(1, seconds_to_ms(expires, name="expires"))


class Task(dramatiq.Actor):
    """A Dramatiq actor that also answers to Celery's calls."""

    @property
    def name(self) -> str:
        return self.actor_name

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task with these arguments, as Celery's ``delay``."""
        return self.apply_async(args=args, kwargs=kwargs)

    def apply_async(
        self,
        args: tuple | list | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | timedelta | None = None,
        priority: int | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
    ) -> AsyncResult:
        """Send the task, as Celery's ``apply_async``.

        Parameters:
          args, kwargs: the task's arguments.
          countdown: seconds to wait before the task may run.
          eta: the moment it may run (naive datetimes are UTC).
          expires: seconds, timedelta or datetime after which it is dropped.
          priority: 0-9, higher runs first (the runbook's scale).
          queue: another queue than the task's own (``default``/``celery``, ``state``).
          task_id: the message id to use instead of a new uuid.
          time_limit, soft_time_limit: per-call limits in seconds.

        Raises:
          ValueError: an argument is out of range or of the wrong type.
          dramatiq.errors.QueueNotFound: ``queue`` is not a known queue.
        """
        if args is not None and not isinstance(args, (tuple, list)):
            raise ValueError(f"args must be a list or tuple, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ValueError(f"kwargs must be a dict, got {type(kwargs).__name__}")
        now = time.time()
        options: dict[str, Any] = {}
        if priority is not None:
            options["priority"] = to_dramatiq_priority(priority)
        max_age = _expires_ms(expires, now)
        if max_age is not None:
            options["max_age"] = max_age
        if time_limit is not None:
            options["time_limit"] = seconds_to_ms(time_limit, name="time_limit")
        if soft_time_limit is not None:
            options["soft_time_limit"] = seconds_to_ms(soft_time_limit, name="soft_time_limit")
        message = self.message_with_options(args=tuple(args or ()), kwargs=kwargs or {}, **options)
        changes: dict[str, Any] = {}
        if queue is not None:
            changes["queue_name"] = queue
        if task_id is not None:
            changes["message_id"] = str(task_id)
        if changes:
            message = message.copy(**changes)
        sent = self.broker.enqueue(message, delay=_delay_ms(countdown, eta, now))
        return AsyncResult(sent)


def task(
    *,
    queue: str,
    priority: int,
    time_limit: float,
    soft_time_limit: float,
    retry_delays: tuple[float, ...],
    name: str | None = None,
    broker: dramatiq.Broker | None = None,
    options: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Task]:
    """Declare a task the way the runbook describes it, in Celery's units.

    Parameters:
      queue: the queue it is sent to.
      priority: the runbook's priority, 0-9, higher = more urgent.
      time_limit, soft_time_limit: hard and soft limits in seconds.
      retry_delays: seconds before each retry of a transient failure;
        its length is the number of retries.
      options: further actor options of the broker's middleware, as Dramatiq names them.
    """

    def decorator(fn: Callable[..., Any]) -> Task:
        declare: Callable[..., Task] = dramatiq.actor  # type: ignore[assignment]
        return declare(
            fn,
            actor_class=Task,
            actor_name=name or fn.__name__,
            queue_name=queue,
            priority=to_dramatiq_priority(priority),
            broker=broker,
            time_limit=seconds_to_ms(time_limit, name="time_limit"),
            soft_time_limit=seconds_to_ms(soft_time_limit, name="soft_time_limit"),
            max_retries=len(retry_delays),
            retry_delays=tuple(seconds_to_ms(d, name="retry delay") for d in retry_delays),
            **(options or {}),
        )

    return decorator
