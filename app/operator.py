"""A human operator takes a conversation over, writes in it, and hands it back."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.conversation import get_or_create_conversation, insert_once
from app.db.models import Conversation, Message
from app.errors import InvalidTaskArguments

__all__ = ["ACTIONS", "set_operator_hold", "record_operator_message"]

#: What ``update_langgraph_state_task`` may be asked to do.
ACTIONS = ("takeover", "handback")


def set_operator_hold(session: Session, customer_key: str, action: str, operator_id: str | None = None) -> Conversation:
    """Take the conversation over (the AI goes quiet) or hand it back."""
    if action not in ACTIONS:
        raise InvalidTaskArguments(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    conversation = get_or_create_conversation(session, customer_key)
    conversation.operator_active = action == "takeover"
    conversation.operator_id = operator_id if action == "takeover" else None
    return conversation


def record_operator_message(session: Session, customer_key: str, text: str, *, message_id: str,
                            operator_id: str | None = None) -> Message:
    """Store what the operator wrote, once per ``message_id``."""
    conversation = get_or_create_conversation(session, customer_key)
    row = Message(conversation_id=conversation.id, author="operator", wamid=message_id, text=text, status="sent")
    return insert_once(session, row, select(Message).where(Message.wamid == message_id))[0]
