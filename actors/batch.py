"""Sending many messages at once: one Redis round trip per chunk instead of one per message.

    from actors.batch import send_many

    send_many(update_message_status_task, [(status,) for status in statuses])
    broker.enqueue_many([actor.message_with_options(args=..., priority=...) for ...], delay=5_000)

A batch keeps every guarantee of :meth:`actors.broker.RedisBroker.enqueue`:
each message keeps its id and lands where a single enqueue would put it
(its queue list, sorted by priority, or its delayed set, waking the
scheduler), and the middleware's ``before_enqueue`` and ``after_enqueue``
hooks run for each message.  What differs is when things fail:

- a message that cannot be sent (an undeclared queue, arguments that are
  not JSON) or a ``before_enqueue`` hook that refuses one raises before
  anything is sent: the batch is sent whole or not at all;
- each chunk of :data:`BATCH_CHUNK` messages is one Lua script call, which
  Redis runs whole or not at all; a batch of more chunks is sent chunk
  after chunk, so when Redis fails half-way :class:`PartialEnqueue` says
  which messages are queued, which are not, and which were in the chunk
  whose answer was lost (all of them queued, or none).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import dramatiq
import redis
from dramatiq import Message
from dramatiq.errors import ConnectionClosed

from actors import keys

if TYPE_CHECKING:
    from actors.broker import RedisBroker

__all__ = ["BATCH_CHUNK", "PartialEnqueue", "enqueue_many", "send_many"]

#: Most messages per Lua script call.  A call is one atomic step that holds
#: Redis for its duration (about a millisecond per thousand messages), and
#: one round trip; bigger chunks save little and delay every other client.
BATCH_CHUNK = 1000


class PartialEnqueue(ConnectionClosed):
    """Redis failed during a batch.

    Attributes:
      sent: the messages in their queues (chunks Redis answered).
      unknown: the chunk whose answer was lost: all of them are queued, or none.
      unsent: the messages never sent.
    """

    def __init__(self, error: Exception, *, sent: list[Message], unknown: list[Message],
                 unsent: list[Message]) -> None:
        super().__init__(f"{error} ({len(sent)} message(s) queued, {len(unknown)} unknown (all or none), "
                         f"{len(unsent)} not sent)")
        self.sent, self.unknown, self.unsent = sent, unknown, unsent


def enqueue_many(broker: RedisBroker, messages: Iterable[Message], *, delay: int | None = None) -> list[Message]:
    """Put ``messages`` in their queues, in order, or with ``delay`` (ms) in their delayed sets.

    Returns:
      The messages sent (on their canonical queue: ``celery`` is ``default``).

    Raises:
      QueueNotFound: a message names a queue never declared; nothing was sent.
      TypeError, ValueError: a message cannot be written as JSON; nothing was sent.
      dramatiq.middleware.MiddlewareError: a ``before_enqueue`` hook refused a message; nothing was sent.
      PartialEnqueue: Redis failed; it says which messages are queued.
    """
    prepared = [broker.prepare(message) for message in messages]
    if not prepared:
        return []
    delay_ms = int(delay) if delay is not None and delay > 0 else 0
    delayed = delay_ms > 0
    destination = keys.delayed_key if delayed else keys.queue_key
    sent = [message for message, _queue, _element in prepared]
    for message in sent:
        broker.emit_before("enqueue", message, delay)
    broker.logger.debug("Enqueueing %d message(s)%s.", len(sent), f" delayed by {delay} ms" if delayed else "")

    script = broker.scripts["enqueue_many"]
    wake = keys.wake_key()
    for start in range(0, len(prepared), BATCH_CHUNK):
        chunk = prepared[start:start + BATCH_CHUNK]
        script_keys = [wake, *(destination(queue) for _message, queue, _element in chunk)]
        args: list[Any] = [delay_ms, *(element for _message, _queue, element in chunk)]
        try:
            script(keys=script_keys, args=args)
        except redis.RedisError as e:
            raise PartialEnqueue(e, sent=sent[:start], unknown=sent[start:start + len(chunk)],
                                 unsent=sent[start + len(chunk):]) from None
        for message in sent[start:start + len(chunk)]:
            broker.emit_after("enqueue", message, delay)
    return sent


def send_many(actor: dramatiq.Actor, calls: Iterable[Sequence[Any]], *, delay_ms: int | None = None) -> list[Message]:
    """Send ``actor`` once per item of ``calls`` (each a tuple or list of its positional arguments).

    For keyword arguments or per-message options, build the messages with
    ``actor.message_with_options(...)`` and pass them to ``broker.enqueue_many``.

    Raises:
      ValueError: an item is not a tuple or list; nothing was sent.
      The errors of :func:`enqueue_many`.
    """
    messages = []
    for n, args in enumerate(calls):
        if not isinstance(args, (tuple, list)):
            raise ValueError(f"each call of send_many must be a tuple or list of arguments; item {n} is a "
                             f"{type(args).__name__}")
        messages.append(actor.message(*args))
    enqueue = getattr(actor.broker, "enqueue_many", None)
    if enqueue is None:
        raise TypeError(f"{type(actor.broker).__name__} cannot send a batch: only actors.broker.RedisBroker can")
    return enqueue(messages, delay=delay_ms)
