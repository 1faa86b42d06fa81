"""Conversations: who the customer is, what was said, and the AI's reply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Conversation, Message
from app.errors import InvalidTaskArguments
from app.llm import SYSTEM_PROMPT, Model, Turn
from app.status import apply_pending_statuses

__all__ = ["InboundMessage", "get_or_create_conversation", "store_inbound", "answer_batch", "history"]


@dataclass(frozen=True)
class InboundMessage:
    """A customer's message as the webhook hands it to the tasks."""

    wamid: str
    text: str
    kind: str = "text"
    wa_id: str | None = None
    user_id: str | None = None

    @classmethod
    def parse(cls, data: Any) -> InboundMessage:
        """Raises InvalidTaskArguments when ``data`` is not a usable message."""
        if not isinstance(data, dict):
            raise InvalidTaskArguments(f"a message must be an object, got {type(data).__name__}")
        wamid, text = data.get("wamid"), data.get("text", "")
        if not isinstance(wamid, str) or not wamid:
            raise InvalidTaskArguments("message.wamid must be a non-empty string")
        if not isinstance(text, str):
            raise InvalidTaskArguments("message.text must be a string")
        kind = data.get("kind", "text")
        return cls(wamid, text, kind if isinstance(kind, str) else "text", data.get("wa_id"), data.get("user_id"))


def get_or_create_conversation(session: Session, customer_key: str, *, wa_id: str | None = None,
                               user_id: str | None = None) -> Conversation:
    """The conversation of ``customer_key`` (wa_id, else user_id), created on first sight."""
    conversation = session.scalars(select(Conversation).where(Conversation.customer_key == customer_key)).first()
    if conversation is None:
        conversation = Conversation(customer_key=customer_key, wa_id=wa_id, user_id=user_id)
        try:
            with session.begin_nested():
                session.add(conversation)
        except IntegrityError:
            # Another worker created it first.
            conversation = session.scalars(
                select(Conversation).where(Conversation.customer_key == customer_key)
            ).one()
    if wa_id and not conversation.wa_id:
        conversation.wa_id = wa_id
    if user_id and not conversation.user_id:
        conversation.user_id = user_id
    return conversation


def insert_once(session: Session, row: Message, existing: Select[Message]) -> tuple[Message, bool]:
    """Insert ``row`` unless ``existing`` finds it, also when another worker races us.

    Returns:
      (the stored row, whether this call inserted it)
    """
    found = session.scalars(existing).first()
    if found is not None:
        return found, False
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        # A unique constraint says another transaction stored it first.
        return session.scalars(existing).one(), False
    return row, True


def store_inbound(session: Session, conversation: Conversation, message: InboundMessage) -> Message:
    """Store a customer's message once per wamid (the database backstop of dedup)."""
    row = Message(conversation_id=conversation.id, author="customer", wamid=message.wamid, kind=message.kind,
                  text=message.text, status="received")
    row, inserted = insert_once(session, row, select(Message).where(Message.wamid == message.wamid))
    if inserted:
        apply_pending_statuses(session, row)
    return row


def history(conversation: Conversation) -> list[Turn]:
    """The conversation as model turns; operator turns are the model's side, marked."""
    turns: list[Turn] = []
    for m in conversation.messages:
        if m.author == "customer":
            turns.append(Turn("user", m.text))
        elif m.author == "operator":
            turns.append(Turn("model", f"[human operator] {m.text}"))
        else:
            turns.append(Turn("model", m.text))
    return turns


def answer_batch(session: Session, *, customer_key: str, batch_id: str, messages: list[InboundMessage],
                 model: Model) -> Message | None:
    """Store a batch and the AI's one reply to it.

    The reply row is unique per conversation and batch, so running this
    twice for one batch never makes a second reply.

    Returns:
      The reply (new or already stored), or None while an operator holds
      the conversation.
    """
    first = messages[0]
    conversation = get_or_create_conversation(session, customer_key, wa_id=first.wa_id, user_id=first.user_id)
    for message in messages:
        store_inbound(session, conversation, message)
    existing = select(Message).where(Message.conversation_id == conversation.id, Message.batch_id == batch_id)
    stored = session.scalars(existing).first()
    if stored is not None:
        return stored
    if conversation.operator_active:
        return None
    session.flush()
    session.refresh(conversation)
    text = model.generate(SYSTEM_PROMPT, history(conversation))
    reply = Message(conversation_id=conversation.id, author="ai", batch_id=batch_id, text=text, status="pending")
    return insert_once(session, reply, existing)[0]
