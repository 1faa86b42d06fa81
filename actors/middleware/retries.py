"""Retries at fixed delays for transient failures only, then the dead-letter set."""

from __future__ import annotations

import logging
import sys
import traceback

import redis
from dramatiq import Middleware
from dramatiq.errors import BrokerConnectionError

from actors.middleware.task_log import task_fields
from actors.names import celery_name
from app.errors import TransientError
from facade.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

__all__ = ["FixedRetries", "is_transient", "DEFAULT_RETRY_DELAYS_MS"]

#: The runbook's schedule: 3 retries at 5, 10 and 20 seconds, no jitter.
DEFAULT_RETRY_DELAYS_MS = (5_000, 10_000, 20_000)

#: Failures worth another try.  The domain translates what it knows into
#: TransientError; the rest are network and database errors that escape
#: it, and time limits (a slow model or API usually recovers).  Our broker
#: raises BrokerConnectionError (ConnectionClosed) for any Redis error, e.g.
#: when a task sends its follow-up or re-enqueues itself during a blip.
_TRANSIENT = (
    TransientError,
    ConnectionError,
    TimeoutError,
    BrokerConnectionError,
    redis.ConnectionError,
    redis.TimeoutError,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)

#: SQLAlchemy's transient errors, by name: looked up in ``sys.modules`` so
#: that a worker whose tasks never touched the database (a no-op worker,
#: a state-only one) does not load SQLAlchemy for this check.  An error
#: of a module that was never imported cannot have been raised.
_SQLALCHEMY_TRANSIENT = ("OperationalError", "TimeoutError")


def is_transient(exc: BaseException) -> bool:
    """True when retrying may succeed."""
    if isinstance(exc, _TRANSIENT):
        return True
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    return sqlalchemy_exc is not None and isinstance(
        exc, tuple(getattr(sqlalchemy_exc, name) for name in _SQLALCHEMY_TRANSIENT))


class FixedRetries(Middleware):
    """Retry transient failures after exactly the configured delays.

    Dramatiq's own ``Retries`` always adds jitter and retries every
    exception; the runbook promises 5, 10 and 20 s for transient errors
    only.  Anything else, and a transient error after the last retry,
    fails the message: the consumer moves it to the dead-letter set
    with the error and traceback stored in its options.

    Parameters:
      retry_delays_ms: delay before each retry; its length is the
        number of retries unless an actor sets ``max_retries``.
    """

    def __init__(self, *, retry_delays_ms: tuple[int, ...] = DEFAULT_RETRY_DELAYS_MS) -> None:
        self.logger = logging.getLogger("celery.app.trace")
        self.retry_delays_ms = tuple(retry_delays_ms)

    @property
    def actor_options(self) -> set[str]:
        return {"max_retries", "retry_delays"}

    def _delays(self, broker, message) -> tuple[tuple[int, ...], int]:
        actor = broker.get_actor(message.actor_name)
        delays = tuple(message.options.get("retry_delays") or actor.options.get("retry_delays") or self.retry_delays_ms)
        max_retries = message.options.get("max_retries", actor.options.get("max_retries", len(delays)))
        return delays, max_retries

    def decide(self, broker, message, exception: BaseException) -> int | None:
        """Record a failed attempt on ``message`` and log what happens next.

        Stores the error and traceback in the message's options and, for
        a retry, counts it.  Also used for a message whose task was
        abandoned at the hard time limit (:mod:`actors.abandoned`).

        Returns:
          The delay of the retry in ms, or None when the message fails.
        """
        retries = int(message.options.get("retries", 0))
        message.options["error"] = repr(exception)
        message.options["traceback"] = "".join(
            traceback.format_exception(type(exception), exception, exception.__traceback__, limit=30)
        )
        delays, max_retries = self._delays(broker, message)
        if is_transient(exception) and retries < max_retries:
            delay_ms = delays[min(retries, len(delays) - 1)] if delays else 0
            message.options["retries"] = retries + 1
            self.logger.info(
                "Task %s[%s] retry: Retry in %ss: %r",
                celery_name(message.actor_name), message.message_id, _seconds(delay_ms), exception,
                extra=task_fields(message),
            )
            return delay_ms
        self.logger.error(
            "Task %s[%s] raised unexpected: %r",
            celery_name(message.actor_name), message.message_id, exception,
            exc_info=(type(exception), exception, exception.__traceback__),
            extra=task_fields(message),
        )
        return None

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None or getattr(message, "abandoned", False):
            return
        delay_ms = self.decide(broker, message, exception)
        if delay_ms is None:
            message.fail()
            return
        retry_on_ack = getattr(message, "retry_on_ack", None)
        if retry_on_ack is not None:
            # Scheduled in the same Redis step as this attempt's ack.
            retry_on_ack(message.copy(), delay_ms)
        else:
            broker.enqueue(message, delay=delay_ms)


def _seconds(ms: int) -> str:
    """``5000`` -> ``"5"``, ``1500`` -> ``"1.5"``: how Celery prints a countdown."""
    return f"{ms / 1000:g}"
