"""Re-enqueue a task whose conversation is busy, without counting a retry."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import CurrentMessage

__all__ = ["requeue_later", "BUSY_DELAY_MS", "REQUEUED_AS"]

logger = logging.getLogger(__name__)

#: How long a task waits before trying a busy conversation again.
BUSY_DELAY_MS = 1_000

#: Option set on the current message naming the message that replaces it
#: (the monitor's history records a requeue, not a success).
REQUEUED_AS = "requeued_as"

#: Options of the current message the re-sent one keeps: its retry count
#: and what its sender chose for this call.
_KEPT_OPTIONS = ("retries", "time_limit", "soft_time_limit", "priority")


def requeue_later(actor: dramatiq.Actor, *args, **kwargs) -> None:
    """Send the current task again after BUSY_DELAY_MS.

    A fresh message, not a retry: the retry count it carries is the
    current one, so waiting for a lock never uses up the retries that
    transient failures are entitled to.  It keeps what the sender asked
    for this call (``apply_async(queue=..., time_limit=..., priority=...)``): a task
    sent with a longer limit must not be cut at the default one because
    it once found its conversation busy.
    """
    current = CurrentMessage.get_current_message()
    message = actor.message_with_options(args=args, kwargs=kwargs)
    if current is not None:
        # the queue it was sent to (apply_async(queue=...)), not the actor's default
        message = message.copy(queue_name=current.queue_name)
        for name in _KEPT_OPTIONS:
            # (priority 0 is a priority: compare with None)
            if current.options.get(name) is not None:
                message.options[name] = current.options[name]
    actor.broker.enqueue(message, delay=BUSY_DELAY_MS)
    if current is not None:
        current.options[REQUEUED_AS] = message.message_id
    logger.info("Conversation busy: %s sent again as %s in %d milliseconds.",
                actor.actor_name, message.message_id, BUSY_DELAY_MS)
