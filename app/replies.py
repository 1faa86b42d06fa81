"""Answering a batch of a customer's messages: store, graph, one reply.

"Read checkpoint, call the model, save, send" runs under the
conversation's lock; the inbound messages are stored before it, so a
task that waits for the lock has already kept them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import redis
from langchain_core.messages import BaseMessage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.conversation import InboundMessage, store_batch
from app.db.models import Conversation, OutboxEntry
from app.db.session import session_scope
from app.errors import AppError, TransientError
from app.graph import ConversationGraph, customer_turn
from app.lock import LockTerms, conversation_lock
from app.outbox import Outgoing, WhatsAppSender, find_entry, recover, send_once

__all__ = ["Services", "process_batch", "graph_turns"]

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """What the conversation domain works with."""

    sessions: sessionmaker[Session]
    redis: redis.Redis
    graph: ConversationGraph
    whatsapp: WhatsAppSender
    #: The terms of a conversation lock taken now (called each time): a TTL
    #: longer than the running task may run, and where its process records
    #: it so that the lock is freed as soon as that process is found dead.
    lock_terms: Callable[[], LockTerms]

    def lock(self, thread_id: str) -> AbstractContextManager[str]:
        """Hold ``thread_id``'s conversation lock for a ``with`` block.

        Raises:
          ConversationBusy: another task holds it.
        """
        terms = self.lock_terms()
        return conversation_lock(self.redis, thread_id, ttl_s=terms.ttl_s, held_in=terms.held_in)


def graph_turns(messages: list[InboundMessage]) -> list[BaseMessage]:
    """The customer's turns of a batch.

    System messages are not the customer's words and stay out of the
    history.  Reactions stay in it as the customer's record, marked
    unanswerable: the model never sees them, so a 👍 neither becomes a
    turn of its own nor joins the words it arrived with.
    """
    return [customer_turn(m.wamid, m.text, answerable=m.answerable)
            for m in messages if m.kind != "system" and m.text.strip()]


def _may_send(services: Services, thread_id: str):
    def allowed(session: Session, conversation: Conversation) -> bool:
        # Re-read just before sending: an operator may have taken over
        # while the model was writing (the DB flag is set at once, the
        # graph's under this lock).
        return not conversation.operator_active and not services.graph.operator_active(thread_id)

    return allowed


def _mark_read(services: Services, wamid: str) -> None:
    """Blue ticks and a typing indicator while the model writes; cosmetic,
    so a failure is logged and the reply goes on."""
    try:
        services.whatsapp.mark_read(wamid, typing=True)
    except AppError as e:
        logger.warning("Could not mark %s read: %r", wamid, e)


def process_batch(services: Services, customer_key: str, batch_id: str,
                  messages: list[InboundMessage]) -> OutboxEntry | None:
    """Store ``messages`` and send the AI's one reply to them.

    Every message is stored (reactions and system messages too); the
    reply is skipped when none is answerable, while an operator holds
    the conversation, or when the history already answers them.

    Returns:
      The reply's outbox entry (new, or found when the batch was
      answered before), or None when no reply is due.

    Raises:
      ConversationBusy: another task holds the conversation; retry soon.
      TransientError: the model or WhatsApp failed for now.
    """
    with session_scope(services.sessions) as session:
        conversation = store_batch(session, customer_key, messages)
        thread_id, conversation_id = conversation.customer_key, conversation.id
    turns = graph_turns(messages)
    with services.lock(thread_id):
        with session_scope(services.sessions) as session:
            # Read under the lock: a handback that ran while this task
            # waited did not see these messages, so this run answers them.
            held = bool(session.scalar(select(Conversation.operator_active)
                                       .where(Conversation.id == conversation_id)))
            entry = find_entry(session, conversation_id, batch_id)
            if entry is not None:
                recover(session, entry)
        if entry is not None:
            # Answered (or settled) before: keep the history complete, send nothing.
            services.graph.run(thread_id, turns, reply_to=None)
            logger.info("Batch %s of %s was answered before (%s); nothing sent.", batch_id, thread_id, entry.state)
            return entry
        answerable = [m for m in messages if m.answerable]
        if held or not answerable:
            services.graph.run(thread_id, turns, reply_to=None)
            return None
        # Blue ticks and "typing…" only once the graph's route has decided
        # that the model answers (not when an operator holds the thread, or
        # someone answered already).
        text = services.graph.run(thread_id, turns, reply_to=batch_id,
                                  before_answer=lambda: _mark_read(services, answerable[-1].wamid))
        if text is None:
            return None
        try:
            entry = send_once(services.sessions, services.whatsapp, conversation_id,
                              Outgoing(key=batch_id, text=text, author="ai", batch_id=batch_id),
                              allowed=_may_send(services, thread_id))
        except TransientError as e:
            if not getattr(e, "maybe_sent", False):
                # WhatsApp did not take it: if the retries never succeed, later
                # answers must not build on a reply the customer never saw.
                # The retry asks the model again.
                services.graph.forget_reply(thread_id, batch_id)
            raise
        if entry is None or entry.state == "failed":
            # The customer never saw it (an operator took over, or WhatsApp
            # refused it): it is no part of the conversation.
            services.graph.forget_reply(thread_id, batch_id)
        return entry
