"""Delivery statuses: they only move forward, and wait for their message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import STATUS_RANK, Message, MessageStatus
from app.errors import InvalidTaskArguments
from app.untrusted import brief, epoch_seconds, without_nul

__all__ = ["StatusUpdate", "record_status", "apply_pending_statuses", "error_code"]

_META_STATUSES = ("sent", "delivered", "read", "failed")

#: Column sizes (app/db/models.py): a longer wamid is refused (it is no
#: wamid of ours); longer free text is cut to fit.
_WAMID_MAX, _RECIPIENT_MAX, _TITLE_MAX, _CALLBACK_MAX = 255, 128, 255, 512


@dataclass(frozen=True)
class StatusUpdate:
    """One entry of ``value.statuses[]`` of a webhook."""

    wamid: str
    status: str
    timestamp: int
    recipient_id: str | None = None
    error_code: int | None = None
    error_title: str | None = None
    #: ``biz_opaque_callback_data`` of the send: the outbox key.
    callback_data: str | None = None

    @classmethod
    def parse(cls, data: Any) -> StatusUpdate:
        """Validate a status object as Meta sends it.

        Raises:
          InvalidTaskArguments: a field is missing or of the wrong type.
        """
        if not isinstance(data, dict):
            raise InvalidTaskArguments(f"a status must be an object, got {type(data).__name__}")
        wamid, status = data.get("id"), data.get("status")
        if not isinstance(wamid, str) or not wamid:
            raise InvalidTaskArguments("status.id (the wamid) must be a non-empty string")
        if len(wamid) > _WAMID_MAX:
            raise InvalidTaskArguments(f"status.id (the wamid) must be at most {_WAMID_MAX} characters, "
                                       f"got {len(wamid)}")
        if "\x00" in wamid:
            raise InvalidTaskArguments(f"status.id (the wamid) holds a NUL character: {brief(wamid)}")
        if status not in _META_STATUSES:
            raise InvalidTaskArguments(
                f"status.status must be one of {', '.join(_META_STATUSES)}, got {brief(status)}")
        try:
            timestamp = epoch_seconds(data.get("timestamp", 0))
        except ValueError:
            raise InvalidTaskArguments(f"status.timestamp must be seconds, got {brief(data.get('timestamp'))}") \
                from None
        code = title = None
        errors = data.get("errors") or []
        if errors and isinstance(errors, list) and isinstance(errors[0], dict):
            code = error_code(errors[0].get("code"))
            title = errors[0].get("title") or errors[0].get("message")
        recipient = data.get("recipient_id") or data.get("recipient_user_id")
        callback = data.get("biz_opaque_callback_data")
        # (PostgreSQL's text holds no NUL: these only inform, so it is replaced)
        recipient, title, callback = (without_nul(v) if isinstance(v, str) else v for v in (recipient, title, callback))
        # Kept as far as their columns hold them: only the wamid identifies the row.
        return cls(wamid, status, timestamp,
                   recipient[:_RECIPIENT_MAX] if isinstance(recipient, str) else None, code,
                   title[:_TITLE_MAX] if isinstance(title, str) else None,
                   callback[:_CALLBACK_MAX] if isinstance(callback, str) and callback else None)


def error_code(value: Any) -> int | None:
    """Meta's error code (a number, or its digits as a string), else None.

    Only codes an INTEGER column holds are kept: ``"\u00b2".isdigit()`` is
    true but ``int()`` refuses it, and a code of a thousand digits is no
    code Meta sends.
    """
    if isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 9:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    return None


def _advance(message: Message, status: str, error_code: int | None, error_title: str | None) -> bool:
    """Move ``message`` to ``status`` unless that would go backwards."""
    if message.status == "failed" or STATUS_RANK[status] <= STATUS_RANK.get(message.status, 0):
        return False
    message.status = status
    if status == "failed":
        message.error_code, message.error_title = error_code, error_title
    return True


def record_status(session: Session, update: StatusUpdate) -> str | None:
    """Keep ``update`` in the status history and apply it to its message if
    that row exists.  A status that names an outbox entry a crash left
    without its wamid completes that entry (the proof it was sent).

    Returns:
      The message's status afterwards, or None when the message is not
      stored yet (the status is applied when it appears).
    """
    session.add(
        MessageStatus(
            wamid=update.wamid,
            status=update.status,
            timestamp=update.timestamp,
            recipient_id=update.recipient_id,
            error_code=update.error_code,
            error_title=update.error_title,
            callback_data=update.callback_data,
        )
    )
    if update.callback_data:
        from app.outbox import complete_from_status

        complete_from_status(session, update.callback_data, update.wamid)
    message = session.scalars(select(Message).where(Message.wamid == update.wamid).with_for_update()).first()
    if message is None:
        return None
    _advance(message, update.status, update.error_code, update.error_title)
    return message.status


def apply_pending_statuses(session: Session, message: Message) -> None:
    """Apply statuses that arrived before ``message`` was stored."""
    if not message.wamid:
        return
    rows = session.scalars(select(MessageStatus).where(MessageStatus.wamid == message.wamid)).all()
    for row in sorted(rows, key=lambda r: STATUS_RANK[r.status]):
        _advance(message, row.status, row.error_code, row.error_title)
