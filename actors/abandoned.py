"""Failing a message whose task could not be stopped, by the retry policy.

When a task is still blocked (in C code, out of reach of the async
``TimeLimitExceeded``) a short grace after its hard time limit, its
process is replaced.  The message it held must not be lost nor simply
run again at once: it is failed as if the task had raised
``TimeLimitExceeded``, so :class:`actors.middleware.FixedRetries`
schedules the next retry (5, 10, 20 s) or dead-letters it.

The prefork supervisor does this for a child it killed, and for the
task of a child that died by itself (:class:`WorkerLostError`); under ``-P solo``
and ``-P threads`` the process does it for itself, marks the message
abandoned (so a late return of the blocked thread changes nothing) and
then exits.
"""

from __future__ import annotations

import logging

from dramatiq import Message

from actors.broker import RedisBroker
from actors.middleware import FixedRetries, TaskHistory, TaskMetrics, find_optional
from actors.middleware import find as find_middleware
from app.errors import TransientError
from facade.api import ms_to_seconds
from facade.exceptions import TimeLimitExceeded

__all__ = ["fail_held", "hard_limit_error", "WorkerLostError"]

logger = logging.getLogger(__name__)


class WorkerLostError(TransientError):
    """The process running a task died (killed, out of memory, crashed).

    Retried like any transient failure, so that a message that kills its
    process reaches the dead-letter set after the last retry instead of
    taking down child after child.
    """


def hard_limit_error(hard_ms: int) -> TimeLimitExceeded:
    """The exception recorded for a task stopped at its hard limit."""
    return TimeLimitExceeded(f"hard time limit ({ms_to_seconds(hard_ms):g}s) exceeded")


def fail_held(broker: RedisBroker, *, inflight_key: str, raw: bytes, message: Message,
              exception: BaseException) -> str:
    """Retry or dead-letter one message held in ``inflight_key`` as ``raw``.

    Each outcome removes the element from the in-flight list in the same
    Redis step as it schedules or dead-letters the message, and does
    nothing when the element is no longer there, so a concurrent ack,
    sweep or release cannot make the message run twice.

    Returns:
      ``"retried"``, ``"failed"`` (dead-lettered), or ``"gone"`` when the
      element was no longer in flight (its ack or the sweep got there first).
    """
    retries = find_middleware(broker, FixedRetries)
    delay_ms = retries.decide(broker, message, exception)
    if delay_ms is not None:
        eta = broker.schedule(message.queue_name, broker.encode(message), delay_ms, take_from=(inflight_key, raw))
        outcome = "retried" if eta >= 0 else "gone"
    else:
        dead = broker.dead_letter(
            inflight_key, raw, message.message_id, queue_name=message.queue_name,
            error=message.options.get("error", repr(exception)), tb=message.options.get("traceback"),
            message=message.asdict(),
        )
        outcome = "failed" if dead else "gone"
    # The monitor's history: a task that was never allowed to return.
    history = find_optional(broker, TaskHistory)
    if history is not None:
        history.record_abandoned(broker, message, outcome, exception)
    metrics = find_optional(broker, TaskMetrics)
    if metrics is not None:
        metrics.count_outcome(message.actor_name, outcome)
    return outcome
