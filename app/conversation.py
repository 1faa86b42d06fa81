"""Inbound messages: what the webhook hands the tasks, and storing them once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.customers import change_number, get_or_create_conversation, ids_from_key
from app.db.models import Conversation, Message
from app.db.session import add_unless_taken
from app.errors import InvalidTaskArguments
from app.inbound import UNANSWERABLE_KINDS
from app.status import apply_pending_statuses
from app.untrusted import encodable, epoch_seconds, without_nul

__all__ = ["InboundMessage", "get_or_create_conversation", "insert_once", "store_inbound",
           "store_batch"]

_OPTIONAL_TEXT = ("wa_id", "user_id", "profile_name", "context_id", "reaction_to", "emoji", "new_wa_id")

#: Fields of what a person wrote, where a NUL character is replaced, not refused.
_FREE_TEXT = ("text", "profile_name")

#: The longest identifier each field's column holds (app/db/models.py): a
#: longer one is refused here, at the webhook, instead of failing the whole
#: batch in the database.
_MAX_LENGTH = {"wamid": 255, "wa_id": 64, "new_wa_id": 64, "user_id": 128, "context_id": 255, "reaction_to": 255,
               "emoji": 64}
#: Display text longer than its column is cut, not refused.
_PROFILE_NAME_MAX = 255


@dataclass(frozen=True)
class InboundMessage:
    """A customer's message as the webhook hands it to the tasks.

    ``text`` is what the model sees (for media a short description).
    Messages from older queues may lack the optional keys; they get the
    defaults.
    """

    wamid: str
    text: str
    kind: str = "text"
    answerable: bool = True
    wa_id: str | None = None
    user_id: str | None = None
    profile_name: str | None = None
    #: Meta's timestamp, seconds since the epoch.
    timestamp: int | None = None
    context_id: str | None = None
    reaction_to: str | None = None
    emoji: str | None = None
    #: A ``user_changed_number`` system message: the customer's new number.
    new_wa_id: str | None = None

    @classmethod
    def parse(cls, data: Any) -> InboundMessage:
        """Validate one message dict of ``process_message_task``.

        Raises:
          InvalidTaskArguments: ``data`` is not a usable message.
        """
        if not isinstance(data, dict):
            raise InvalidTaskArguments(f"a message must be an object, got {type(data).__name__}")
        wamid, text = data.get("wamid"), data.get("text")
        if not isinstance(wamid, str) or not wamid:
            raise InvalidTaskArguments("message.wamid must be a non-empty string")
        if len(wamid) > _MAX_LENGTH["wamid"]:
            raise InvalidTaskArguments(f"message.wamid must be at most {_MAX_LENGTH['wamid']} characters, "
                                       f"got {len(wamid)}")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise InvalidTaskArguments(f"message.text must be a string (message {wamid})")
        kind = data.get("kind") or "text"
        if not isinstance(kind, str) or len(kind) > 32:
            raise InvalidTaskArguments(f"message.kind must be a short string (message {wamid})")
        answerable = data.get("answerable", kind not in UNANSWERABLE_KINDS)
        if not isinstance(answerable, bool):
            raise InvalidTaskArguments(f"message.answerable must be true or false (message {wamid})")
        optional: dict[str, str | None] = {}
        for name in _OPTIONAL_TEXT:
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidTaskArguments(f"message.{name} must be a string or null (message {wamid})")
            if value is not None and name in _MAX_LENGTH and len(value) > _MAX_LENGTH[name]:
                raise InvalidTaskArguments(f"message.{name} must be at most {_MAX_LENGTH[name]} characters, "
                                           f"got {len(value)} (message {wamid})")
            if name == "profile_name" and value:
                value = value[:_PROFILE_NAME_MAX]
            # An empty emoji is meaningful: the customer removed a reaction.
            optional[name] = value if name == "emoji" else (value or None)
        timestamp = data.get("timestamp")
        if timestamp is not None:
            try:
                # (not int(): Infinity overflows, 1e30 is no BIGINT)
                timestamp = epoch_seconds(timestamp)
            except ValueError as e:
                raise InvalidTaskArguments(f"message.timestamp: {e} (message {wamid:.80})") from None
        for name, value in (("wamid", wamid), ("text", text), ("kind", kind), *optional.items()):
            if value is not None and not encodable(value):
                # JSON may spell one ("\\udfff"); PostgreSQL and Redis would refuse it deep in the task
                raise InvalidTaskArguments(f"message.{name} is not valid Unicode text (it holds a lone surrogate)")
            if value is not None and "\x00" in value and name not in _FREE_TEXT:
                raise InvalidTaskArguments(f"message.{name} holds a NUL character (message {wamid!r:.80})")
        # PostgreSQL's text holds no NUL (JSON may spell one, "\\u0000"): what the customer wrote is kept
        text = without_nul(text)
        if optional["profile_name"] is not None:
            optional["profile_name"] = without_nul(optional["profile_name"])
        # Reactions and system messages are never answered, whatever the flag says.
        answerable = answerable and kind not in UNANSWERABLE_KINDS
        return cls(wamid, text, kind, answerable, timestamp=timestamp, **optional)


def insert_once(session: Session, row: Message, existing: Select[Message]) -> tuple[Message, bool]:
    """Insert ``row`` unless ``existing`` finds it, also when another worker races us.

    Returns:
      (the stored row, whether this call inserted it)
    """
    found = session.scalars(existing).first()
    if found is not None:
        return found, False
    if not add_unless_taken(session, row):
        return session.scalars(existing).one(), False
    return row, True


def store_inbound(session: Session, conversation: Conversation, message: InboundMessage) -> Message:
    """Store a customer's message once per wamid (the database backstop of dedup)."""
    row = Message(conversation_id=conversation.id, author="customer", wamid=message.wamid, kind=message.kind,
                  text=message.text, status="received", answerable=message.answerable,
                  sent_at_s=message.timestamp, context_id=message.context_id, reaction_to=message.reaction_to,
                  emoji=message.emoji)
    row, inserted = insert_once(session, row, select(Message).where(Message.wamid == message.wamid))
    if inserted:
        apply_pending_statuses(session, row)
    return row


def store_batch(session: Session, customer_key: str, messages: list[InboundMessage]) -> Conversation:
    """Store every message of a batch (reactions and system messages too)
    and apply identity changes; returns the conversation."""
    first = next((m for m in messages if m.wa_id or m.user_id), None)
    wa_id, user_id = (first.wa_id, first.user_id) if first is not None else ids_from_key(customer_key)
    conversation = get_or_create_conversation(session, customer_key, wa_id=wa_id, user_id=user_id,
                                              profile_name=messages[0].profile_name)
    session.flush()
    for message in messages:
        store_inbound(session, conversation, message)
        if message.new_wa_id:
            change_number(session, conversation, message.new_wa_id)
    return conversation
