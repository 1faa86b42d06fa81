"""Conversations, their messages and the delivery statuses Meta reports."""

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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "Conversation", "Message", "MessageStatus", "STATUS_RANK"]

#: Delivery statuses in the order they may follow each other; a status
#: never moves to a lower rank.  ``failed`` is final.
STATUS_RANK = {"pending": 0, "sending": 1, "sent": 2, "delivered": 3, "read": 4, "failed": 5}


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Conversation(Base):
    """One customer's chat with the business.

    A customer is keyed by ``wa_id`` when Meta sends one, else by the
    business-scoped ``user_id`` (customers with a username may have no
    phone number).  Both are kept.
    """

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_key: Mapped[str] = mapped_column(String(128), unique=True)
    wa_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(128))
    #: True while a human operator holds the conversation (the AI is quiet).
    operator_active: Mapped[bool] = mapped_column(Boolean, default=False)
    operator_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, onupdate=_utcnow)

    messages: Mapped[list[Message]] = relationship(back_populates="conversation", order_by="Message.id")


class Message(Base):
    """A message in a conversation: the customer's, the AI's or an operator's.

    An inbound wamid is unique (the backstop of the Redis dedup); an AI
    reply is unique per conversation and batch (the outbox: written
    before the send, completed with the wamid WhatsApp returns).
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "batch_id", name="uq_messages_reply_per_batch"),
        Index("ix_messages_conversation", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    #: "customer", "ai" or "operator".
    author: Mapped[str] = mapped_column(String(16))
    wamid: Mapped[str | None] = mapped_column(String(255), unique=True)
    #: Set on AI replies only: the batch of inbound messages they answer.
    batch_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32), default="text")
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_title: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class MessageStatus(Base):
    """Every delivery status Meta sent, kept even before its message row exists."""

    __tablename__ = "message_statuses"
    __table_args__ = (Index("ix_message_statuses_wamid", "wamid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wamid: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    #: Meta's timestamp, seconds since the epoch.
    timestamp: Mapped[int] = mapped_column(BigInteger)
    recipient_id: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_title: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
