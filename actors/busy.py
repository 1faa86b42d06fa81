"""Re-enqueue a task whose conversation is busy, without counting a retry."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import CurrentMessage

__all__ = ["requeue_later", "BUSY_DELAY_MS"]

logger = logging.getLogger(__name__)

#: How long a task waits before trying a busy conversation again.
BUSY_DELAY_MS = 1_000


def requeue_later(actor: dramatiq.Actor, *args, **kwargs) -> None:
    """Send the current task again after BUSY_DELAY_MS.

    A fresh message, not a retry: the retry count it carries is the
    current one, so waiting for a lock never uses up the retries that
    transient failures are entitled to.
    """
    current = CurrentMessage.get_current_message()
    retries = int(current.options.get("retries", 0)) if current is not None else 0
    message = actor.message_with_options(args=args, kwargs=kwargs)
    if retries:
        message.options["retries"] = retries
    actor.broker.enqueue(message, delay=BUSY_DELAY_MS)
    logger.info("Conversation busy: %s sent again as %s in %d milliseconds.",
                actor.actor_name, message.message_id, BUSY_DELAY_MS)
