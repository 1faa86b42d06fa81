"""Meta's webhook notifications, parsed into what the tasks consume.

Pure functions, no I/O.  :func:`parse_notification` walks every entry,
change and value of a ``whatsapp_business_account`` notification and
returns

- inbound messages as flat dicts (see :func:`app.inbound.describe`), the
  shape ``process_message_task`` receives from the buffer;
- statuses as the dicts ``update_message_status_task`` accepts
  (:meth:`app.status.StatusUpdate.parse`);
- system-level errors (``value.errors[]``);
- problems: parts that could not be understood, each with its reason,
  while the rest of the body is still used (nothing good is dropped
  because a neighbour is bad).

Unknown fields are ignored.  A body whose outer structure is wrong
raises :class:`WebhookFormatError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from app.errors import AppError
from app.inbound import describe
from app.status import StatusUpdate

__all__ = ["Notification", "WebhookFormatError", "parse_body", "parse_notification", "conversation_key"]

#: The ``object`` of WhatsApp Business Account notifications.
WABA_OBJECT = "whatsapp_business_account"


class WebhookFormatError(AppError, ValueError):
    """A signed body that is not a notification this service understands."""


@dataclass
class Notification:
    """What one webhook body holds, in order of appearance."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def conversation_key(message: dict[str, Any]) -> str | None:
    """The customer a message belongs to: ``wa_id`` when known, else ``user_id``."""
    return message.get("wa_id") or message.get("user_id")


def parse_body(raw: bytes) -> Notification:
    """Decode a raw body (UTF-8 JSON) and parse it.

    Raises:
      WebhookFormatError: not JSON, or not shaped as a notification.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise WebhookFormatError(f"the body is not valid JSON: {e}") from None
    return parse_notification(body)


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise WebhookFormatError(f"{where} must be a list, got {type(value).__name__}")
    return value


def parse_notification(body: Any) -> Notification:
    """Parse a decoded notification; see the module docstring.

    Raises:
      WebhookFormatError: the body, an entry or a change is not shaped as
        Meta sends them.
    """
    if not isinstance(body, dict):
        raise WebhookFormatError(f"the body must be a JSON object, got {type(body).__name__}")
    if body.get("object") != WABA_OBJECT:
        raise WebhookFormatError(f"object must be {WABA_OBJECT!r}, got {body.get('object')!r:.80}")
    if "entry" not in body:
        raise WebhookFormatError("the body has no entry list")
    result = Notification()
    for i, entry in enumerate(_list(body["entry"], "entry")):
        if not isinstance(entry, dict):
            raise WebhookFormatError(f"entry[{i}] must be an object")
        for j, change in enumerate(_list(entry.get("changes"), f"entry[{i}].changes")):
            where = f"entry[{i}].changes[{j}]"
            if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
                raise WebhookFormatError(f"{where} must be an object with a value object")
            if change.get("field") != "messages":
                continue  # account, template and other notifications are not this service's
            _parse_value(change["value"], where, result)
    return result


def _parse_value(value: dict[str, Any], where: str, result: Notification) -> None:
    contacts = [c for c in _list(value.get("contacts"), f"{where}.value.contacts") if isinstance(c, dict)]
    for k, message in enumerate(_list(value.get("messages"), f"{where}.value.messages")):
        try:
            result.messages.append(describe(message, contacts))
        except ValueError as e:
            result.problems.append(f"{where}.value.messages[{k}]: {e}")
    for k, status in enumerate(_list(value.get("statuses"), f"{where}.value.statuses")):
        try:
            result.statuses.append(_status(status))
        except ValueError as e:
            result.problems.append(f"{where}.value.statuses[{k}]: {e}")
    for error in _list(value.get("errors"), f"{where}.value.errors"):
        if isinstance(error, dict):
            result.errors.append(_error(error))
        else:
            result.problems.append(f"{where}.value.errors: an error must be an object")


def _error(error: dict[str, Any]) -> dict[str, Any]:
    details = error.get("error_data")
    return {
        "code": error.get("code"),
        "title": error.get("title"),
        "message": error.get("message"),
        "details": details.get("details") if isinstance(details, dict) else None,
    }


def _status(status: Any) -> dict[str, Any]:
    """The fields of a status that ``update_message_status_task`` reads.

    Raises:
      ValueError: the status would be refused by the task.
    """
    StatusUpdate.parse(status)  # the task's own check, so a bad status is reported here
    out: dict[str, Any] = {"id": status["id"], "status": status["status"], "timestamp": status.get("timestamp")}
    for name in ("recipient_id", "recipient_user_id", "biz_opaque_callback_data"):
        if isinstance(status.get(name), str):
            out[name] = status[name]
    errors = [e for e in status.get("errors") or [] if isinstance(e, dict)]
    if errors:
        out["errors"] = [{k: e[k] for k in ("code", "title", "message") if k in e} for e in errors]
    return out
