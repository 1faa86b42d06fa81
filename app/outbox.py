"""The outbox: every message the business sends, at most once.

WhatsApp's send has no idempotency key.  So a row, unique per
conversation and key (the batch id of an AI reply, ``operator:<id>``
for an operator's message), is committed in state ``sending`` before
the call, and completed with the wamid WhatsApp returns (``sent``) or
the permanent error (``failed``).

A row found still ``sending`` means a task died between the commit and
the completion: the message may or may not have gone out.  It is never
resent blindly.  Every send carries its key as
``biz_opaque_callback_data``, which Meta echoes in the status webhooks;
a stored status with that key proves the send and gives its wamid, and
the row becomes ``sent``.  Without such proof the row becomes
``unknown`` and nothing is sent: a missing reply is the lesser harm
than a duplicate, and an operator can see it.  A status that arrives
later still completes an ``unknown`` row (see :func:`complete_from_status`).

A transient error that proves nothing was sent (429, 5xx, no
connection: WhatsApp did not accept the message) deletes the row, so the
task's retry may send again.  A transient error after the request may
have reached Meta (``maybe_sent``: a read timeout, a dropped
connection) leaves the row ``sending``: the retry settles it as a crash
is settled, by a status webhook or as ``unknown``, and never resends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import STATUS_RANK, Conversation, Message, MessageStatus, OutboxEntry
from app.db.session import session_scope
from app.errors import AppError, InvalidTaskArguments, TransientError
from app.status import apply_pending_statuses

__all__ = ["WhatsAppSender", "Outgoing", "find_entry", "send_once", "recover", "complete_from_status",
           "operator_key"]

logger = logging.getLogger(__name__)


class WhatsAppSender(Protocol):
    """What the outbox needs of the WhatsApp client (app.whatsapp)."""

    def send_text(self, *, to: str | None, recipient: str | None, text: str,
                  callback_data: str | None = None) -> str: ...

    def mark_read(self, wamid: str, *, typing: bool = True) -> None: ...


@dataclass(frozen=True)
class Outgoing:
    """A message to send once: who writes it and under which outbox key."""

    key: str
    text: str
    #: "ai" or "operator".
    author: str
    batch_id: str | None = None
    operator_message_id: str | None = None
    operator_id: str | None = None


def operator_key(message_id: str) -> str:
    return f"operator:{message_id}"


def find_entry(session: Session, conversation_id: int, key: str) -> OutboxEntry | None:
    return session.scalars(
        select(OutboxEntry).where(OutboxEntry.conversation_id == conversation_id, OutboxEntry.key == key)
    ).first()


def _message(session: Session, entry: OutboxEntry) -> Message | None:
    return session.get(Message, entry.message_id) if entry.message_id is not None else None


def _complete(session: Session, entry: OutboxEntry, wamid: str) -> None:
    entry.state, entry.wamid = "sent", wamid
    message = _message(session, entry)
    if message is not None:
        message.wamid = wamid
        if STATUS_RANK.get(message.status, 0) < STATUS_RANK["sent"]:
            message.status = "sent"
        session.flush()
        apply_pending_statuses(session, message)


def recover(session: Session, entry: OutboxEntry) -> str:
    """Settle an entry a crash left ``sending``; never resends.

    Returns:
      The entry's state afterwards: ``sent`` when a status webhook
      proves the send, else ``unknown``.
    """
    if entry.state != "sending":
        return entry.state
    status = session.scalars(
        select(MessageStatus).where(MessageStatus.callback_data == entry.key).order_by(MessageStatus.id)
    ).first()
    if status is not None:
        _complete(session, entry, status.wamid)
        logger.info("Outbox entry %s was sent as %s (a status webhook proves it).", entry.key, status.wamid)
    else:
        entry.state = "unknown"
        message = _message(session, entry)
        if message is not None:
            message.status = "unknown"
        logger.warning("Outbox entry %s was left sending by a crash and nothing proves it went out; "
                       "marked unknown, not resent.", entry.key)
    return entry.state


def complete_from_status(session: Session, callback_data: str, wamid: str) -> None:
    """A status echoing an outbox key completes an entry still without its wamid."""
    entries = session.scalars(
        select(OutboxEntry).where(OutboxEntry.key == callback_data, OutboxEntry.state.in_(("sending", "unknown")))
    ).all()
    for entry in entries:
        _complete(session, entry, wamid)


def send_once(sessions: sessionmaker[Session], whatsapp: WhatsAppSender, conversation_id: int,
              outgoing: Outgoing, *, allowed: Callable[[Session, Conversation], bool] | None = None
              ) -> OutboxEntry | None:
    """Send ``outgoing`` unless its outbox entry exists; at most once.

    Parameters:
      allowed: read just before the send, in the transaction that writes
        the entry; False sends nothing (e.g. an operator took over).

    Returns:
      The outbox entry (new or found), or None when ``allowed`` said no.
      A permanent WhatsApp error, or a text the client refuses
      (ValueError: empty, too long), gives a ``failed`` entry with the
      error recorded on it and its message.

    Raises:
      TransientError: WhatsApp did not accept the message; the entry is
        gone and a retry sends again.  When the error is ``maybe_sent``,
        the entry stays ``sending`` and a retry settles it without
        sending (see :func:`recover`).
      InvalidTaskArguments: the customer has neither a wa_id nor a user_id.
    """
    with session_scope(sessions) as session:
        entry = find_entry(session, conversation_id, outgoing.key)
        if entry is not None:
            recover(session, entry)
            return entry
        conversation = session.get(Conversation, conversation_id, with_for_update=True)
        assert conversation is not None
        if allowed is not None and not allowed(session, conversation):
            return None
        to, recipient = (conversation.wa_id, None) if conversation.wa_id else (None, conversation.user_id)
        if not (to or recipient):
            raise InvalidTaskArguments(
                f"conversation {conversation.customer_key!r} has no wa_id or user_id to send to")
        message = Message(conversation_id=conversation_id, author=outgoing.author, kind="text", text=outgoing.text,
                          status="sending", batch_id=outgoing.batch_id,
                          operator_message_id=outgoing.operator_message_id, operator_id=outgoing.operator_id)
        session.add(message)
        session.flush()
        entry = OutboxEntry(conversation_id=conversation_id, key=outgoing.key, state="sending", text=outgoing.text,
                            message_id=message.id)
        session.add(entry)
    entry_id = entry.id
    try:
        wamid = whatsapp.send_text(to=to, recipient=recipient, text=outgoing.text, callback_data=outgoing.key)
    except TransientError as e:
        if getattr(e, "maybe_sent", False):
            logger.warning("Outbox entry %s may have been sent (%s); left sending, never resent.",
                           outgoing.key, e)
            raise
        with session_scope(sessions) as session:
            stale = session.get(OutboxEntry, entry_id)
            if stale is not None:
                message_row = _message(session, stale)
                session.delete(stale)
                if message_row is not None:
                    session.delete(message_row)
        raise
    except (AppError, ValueError) as e:
        # ValueError: the client refused the text itself (empty, too long);
        # sending it again cannot help.
        raw_code, title = getattr(e, "code", None), str(getattr(e, "title", None) or e)
        code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
        with session_scope(sessions) as session:
            failed = session.get(OutboxEntry, entry_id)
            assert failed is not None
            failed.state, failed.error_code, failed.error_title = "failed", code, title[:255]
            message_row = _message(session, failed)
            if message_row is not None:
                message_row.status, message_row.error_code, message_row.error_title = "failed", code, title[:255]
        logger.warning("WhatsApp refused outbox entry %s for good: %s %s", outgoing.key, code, title)
        return failed
    with session_scope(sessions) as session:
        sent = session.get(OutboxEntry, entry_id)
        assert sent is not None
        _complete(session, sent, wamid)
    return sent
