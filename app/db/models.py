"""Customers, conversations, their messages, the reply outbox and operator actions."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "Customer",
    "Conversation",
    "Message",
    "MessageStatus",
    "OutboxEntry",
    "OperatorAction",
    "STATUS_RANK",
    "OUTBOX_STATES",
]

#: Delivery statuses in the order they may follow each other; a status
#: never moves to a lower rank.  ``failed`` is final.
STATUS_RANK = {"pending": 0, "received": 0, "sending": 1, "unknown": 1, "sent": 2, "delivered": 3, "read": 4,
               "failed": 5}

#: States of an outbox entry: ``sending`` (written before the call),
#: ``sent`` (WhatsApp returned a wamid), ``failed`` (a permanent error),
#: ``unknown`` (a crash left it sending and nothing proves it went out).
OUTBOX_STATES = ("sending", "sent", "failed", "unknown")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    """Who writes to the business: a phone number (``wa_id``), a business-scoped
    ``user_id`` (customers with a username may have no phone number), or both.
    """

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wa_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    user_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    #: The number the customer had before a ``user_changed_number`` system message.
    previous_wa_id: Mapped[str | None] = mapped_column(String(64))
    profile_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, onupdate=_utcnow)


class Conversation(Base):
    """One customer's chat with the business.

    A customer is keyed by ``wa_id`` when Meta sends one, else by the
    business-scoped ``user_id``.  Both are kept.  ``customer_key`` is
    also the conversation's LangGraph thread id and lock name, and does
    not change when the customer changes number.
    """

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_key: Mapped[str] = mapped_column(String(128), unique=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL", name="fk_conversations_customer_id"), index=True
    )
    wa_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(128))
    #: True while a human operator holds the conversation (the AI is quiet).
    operator_active: Mapped[bool] = mapped_column(Boolean, default=False)
    operator_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, onupdate=_utcnow)

    customer: Mapped[Customer | None] = relationship()
    messages: Mapped[list[Message]] = relationship(back_populates="conversation", order_by="Message.id")


class Message(Base):
    """A message in a conversation: the customer's, the AI's or an operator's.

    An inbound wamid is unique (the backstop of the Redis dedup); an AI
    reply is unique per conversation and batch, an operator message per
    ``operator_message_id``.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "batch_id", name="uq_messages_reply_per_batch"),
        UniqueConstraint("operator_message_id", name="uq_messages_operator_message_id"),
        Index("ix_messages_conversation", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    #: "customer", "ai" or "operator".
    author: Mapped[str] = mapped_column(String(16))
    wamid: Mapped[str | None] = mapped_column(String(255), unique=True)
    #: Set on AI replies only: the batch of inbound messages they answer.
    batch_id: Mapped[str | None] = mapped_column(String(128))
    #: text, image, document, audio, voice, video, sticker, location,
    #: contacts, interactive, button, reaction, system, unsupported, ...
    kind: Mapped[str] = mapped_column(String(32), default="text")
    #: What the model sees (for media: a short description).
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_title: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    #: Meta's timestamp of an inbound message, seconds since the epoch.
    sent_at_s: Mapped[int | None] = mapped_column(BigInteger)
    #: The wamid this message quotes (``context.id``).
    context_id: Mapped[str | None] = mapped_column(String(255))
    #: A reaction's target wamid and emoji (empty when removed).
    reaction_to: Mapped[str | None] = mapped_column(String(255))
    emoji: Mapped[str | None] = mapped_column(String(64))
    #: False for reactions and system messages: stored, never answered.
    answerable: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    #: The operator API's id of an operator message (the graph's message id).
    operator_message_id: Mapped[str | None] = mapped_column(String(255))
    operator_id: Mapped[str | None] = mapped_column(String(128))

    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class MessageStatus(Base):
    """Every delivery status Meta sent (the status history), kept even
    before its message row exists."""

    __tablename__ = "message_statuses"
    __table_args__ = (
        Index("ix_message_statuses_wamid", "wamid"),
        Index("ix_message_statuses_callback", "callback_data"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wamid: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    #: Meta's timestamp, seconds since the epoch.
    timestamp: Mapped[int] = mapped_column(BigInteger)
    recipient_id: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_title: Mapped[str | None] = mapped_column(String(255))
    #: ``biz_opaque_callback_data`` echoed by Meta: the outbox key of the send.
    callback_data: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class OutboxEntry(Base):
    """One message the business sends, written before the send.

    WhatsApp's send has no idempotency key, so this row (unique per
    conversation and ``key``: the batch id of an AI reply, or
    ``operator:<message id>``) is what makes a send happen at most once.
    """

    __tablename__ = "reply_outbox"
    __table_args__ = (UniqueConstraint("conversation_id", "key", name="uq_reply_outbox_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(300))
    #: The message row this send stores (an AI reply or an operator message).
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL",
                                                              name="fk_reply_outbox_message_id"))
    #: One of OUTBOX_STATES.
    state: Mapped[str] = mapped_column(String(16), default="sending")
    text: Mapped[str] = mapped_column(Text, default="")
    #: The wamid WhatsApp returned for the send.
    wamid: Mapped[str | None] = mapped_column(String(255))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_title: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, onupdate=_utcnow)


class OperatorAction(Base):
    """What an operator did to a conversation, with who and when."""

    __tablename__ = "operator_actions"
    __table_args__ = (Index("ix_operator_actions_conversation", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    #: "takeover", "handback" or "message".
    action: Mapped[str] = mapped_column(String(16))
    operator_id: Mapped[str | None] = mapped_column(String(128))
    #: For "message": the operator message's id; for "takeover" and
    #: "handback": the id of the task message that applied it (a retry of
    #: that message does not apply it again).
    message_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
