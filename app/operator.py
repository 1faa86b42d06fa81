"""A human operator takes a conversation over, writes in it, and hands it back.

The flag lives in two places: the database (set at once, so a reply
being written sees it when it re-reads the flag just before sending)
and the graph's state (written under the conversation's lock with
``update_state(as_node="operator")``, always to the database's current
value).  Each operator action is applied to the database once: its
row in ``operator_actions`` carries the id of the task message that
applied it, in the same transaction as the flag, so a retry of that
message (after a transient error past the commit) or a run re-sent
because the conversation was busy only copies the database's current
flag into the graph.  So takeovers and handbacks that race converge on
the last one applied: a retried takeover never undoes the handback that
came after it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import HumanMessage
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.customers import get_or_create_conversation
from app.db.models import Conversation, Message, OperatorAction
from app.db.session import session_scope
from app.errors import InvalidTaskArguments
from app.graph import operator_turn
from app.outbox import Outgoing, operator_key, send_once
from app.replies import Services

__all__ = ["ACTIONS", "Handback", "set_operator_hold", "sync_operator_message", "set_hold_flag"]

logger = logging.getLogger(__name__)

#: What ``update_langgraph_state_task`` may be asked to do.
ACTIONS = ("takeover", "handback")

#: Longer wamids are hashed in a handback's batch id (batch ids are at most 128 characters).
_MAX_WAMID_IN_BATCH_ID = 110


@dataclass(frozen=True)
class Handback:
    """Customer messages that waited while an operator held the conversation:
    the arguments of the ``process_message_task`` that answers them."""

    conversation: str
    batch_id: str
    messages: list[dict[str, Any]]


def set_hold_flag(session: Session, customer_key: str, action: str, operator_id: str | None = None) -> Conversation:
    """Set the database's flag (takeover: held by ``operator_id``)."""
    if action not in ACTIONS:
        raise InvalidTaskArguments(f"action must be one of {', '.join(ACTIONS)}, got {action!r:.80}")
    conversation = get_or_create_conversation(session, customer_key)
    conversation.operator_active = action == "takeover"
    conversation.operator_id = operator_id if action == "takeover" else None
    return conversation


def _waiting(session: Session, services: Services, conversation: Conversation) -> Handback | None:
    """The answerable customer messages at the end of the history, if any."""
    trailing: list[str] = []
    for message in reversed(services.graph.messages(conversation.customer_key)):
        if not isinstance(message, HumanMessage):
            break
        if message.id:
            trailing.append(message.id)
    if not trailing:
        return None
    rows = session.scalars(
        select(Message).where(Message.wamid.in_(trailing), Message.answerable.is_(True)).order_by(Message.id)
    ).all()
    if not rows:
        return None
    messages = [
        {"wamid": m.wamid, "kind": m.kind, "text": m.text, "answerable": True, "wa_id": conversation.wa_id,
         "user_id": conversation.user_id, "timestamp": m.sent_at_s, "context_id": m.context_id}
        for m in rows
    ]
    # One batch id per set of waiting messages: a repeated handback answers once.
    last = rows[-1].wamid or ""
    if len(last) > _MAX_WAMID_IN_BATCH_ID:
        last = hashlib.sha1(last.encode()).hexdigest()
    return Handback(conversation.customer_key, f"handback:{last}", messages)


def _applied(session: Session, conversation: Conversation, action: str, action_id: str | None) -> bool:
    """Whether an earlier run of the action ``action_id`` set the flag already."""
    if action_id is None:
        return False
    return session.scalars(select(OperatorAction.id).where(
        OperatorAction.conversation_id == conversation.id, OperatorAction.action == action,
        OperatorAction.message_id == action_id)).first() is not None


def set_operator_hold(services: Services, customer_key: str, action: str,
                      operator_id: str | None = None, *, flag_applied: bool = False,
                      action_id: str | None = None) -> Handback | None:
    """Take the conversation over (the AI goes quiet) or hand it back.

    Parameters:
      flag_applied: an earlier run of this action set the database's flag
        and found the conversation busy; this run only copies the
        database's current flag (maybe a later action's) into the graph.
      action_id: what identifies this action across runs (the task
        message's id): when a run with this id already set the flag,
        this run does not set it again, as with ``flag_applied``.

    Returns:
      On handback, the customer messages that waited unanswered, for the
      caller to send to ``process_message_task`` after this returns.

    Raises:
      InvalidTaskArguments: ``action`` is not takeover or handback.
      ConversationBusy: another task holds the conversation (the
        database flag is set already; re-send with ``flag_applied`` to
        update the graph).
    """
    if action not in ACTIONS:
        raise InvalidTaskArguments(f"action must be one of {', '.join(ACTIONS)}, got {action!r:.80}")
    with session_scope(services.sessions) as session:
        conversation = get_or_create_conversation(session, customer_key)
        thread_id = conversation.customer_key
        if not flag_applied and not _applied(session, conversation, action, action_id):
            set_hold_flag(session, customer_key, action, operator_id)
            session.add(OperatorAction(conversation_id=conversation.id, action=action, operator_id=operator_id,
                                       message_id=action_id))
    with services.lock(thread_id):
        with session_scope(services.sessions) as session:
            conversation = get_or_create_conversation(session, thread_id)
            held, conversation_id = conversation.operator_active, conversation.id
        # Outside the session: on SQLite its write lock would block the
        # checkpointer's own connection.
        services.graph.write_as_operator(thread_id, {"operator_active": held})
        logger.info("Conversation %s: %s by %s; held=%s.", thread_id, action, operator_id or "an operator", held)
        if action == "handback" and not held:
            with session_scope(services.sessions) as session:
                handed_back = session.get(Conversation, conversation_id)
                assert handed_back is not None
                return _waiting(session, services, handed_back)
    return None


def sync_operator_message(services: Services, customer_key: str, text: str, *, message_id: str,
                          operator_id: str | None = None, send: bool = False) -> Message | None:
    """An operator's message enters the conversation as the operator's turn.

    With ``send``, it is first sent to the customer, at most once per
    ``message_id`` (through the outbox); a message WhatsApp refused stays
    out of the history.  Without, the operator wrote from the WhatsApp
    Business app and it is only recorded.

    Returns:
      The stored message row, or None when WhatsApp refused it.
    """
    with session_scope(services.sessions) as session:
        conversation = get_or_create_conversation(session, customer_key)
        thread_id, conversation_id = conversation.customer_key, conversation.id
    with services.lock(thread_id):
        if send:
            entry = send_once(services.sessions, services.whatsapp, conversation_id,
                              Outgoing(key=operator_key(message_id), text=text, author="operator",
                                       operator_message_id=message_id, operator_id=operator_id))
            assert entry is not None  # no ``allowed`` check: an operator may always write
            if entry.state == "failed":
                return None
        with session_scope(services.sessions) as session:
            row = session.scalars(select(Message).where(Message.operator_message_id == message_id)).first()
            if row is None:
                row = Message(conversation_id=conversation_id, author="operator", kind="text", text=text,
                              status="sent", operator_message_id=message_id, operator_id=operator_id)
                session.add(row)
            recorded = session.scalars(select(OperatorAction).where(
                OperatorAction.conversation_id == conversation_id, OperatorAction.action == "message",
                OperatorAction.message_id == message_id)).first()
            if recorded is None:
                session.add(OperatorAction(conversation_id=conversation_id, action="message",
                                           operator_id=operator_id, message_id=message_id))
        # After the commit: on SQLite the session's write lock would block the
        # checkpointer's own connection.  The turn's id makes a rewrite a no-op.
        services.graph.write_as_operator(thread_id, {"messages": [operator_turn(message_id, text)]})
        return row

