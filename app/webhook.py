"""Meta's webhook notifications, parsed into what the tasks consume.

Pure functions, no I/O.  :func:`parse_notification` walks every entry,
change and value of a ``whatsapp_business_account`` notification and
returns

- inbound messages as flat dicts (see :func:`app.inbound.describe`), the
  shape ``process_message_task`` receives from the buffer;
- statuses as the dicts ``update_message_status_task`` accepts
  (:meth:`app.status.StatusUpdate.parse`);
- system-level errors (``value.errors[]``);
- problems: parts that could not be understood, each with where it is
  (``entry[1].changes[0].value.messages``) and why.

Each entry, change, list and element is parsed on its own, and a bad one
is a problem at its own level while the rest of the body is still used:
Meta gets a 200 for a signed body whatever it holds (it would retry a
poison body for days), so it never sends the good message next to a bad
neighbour again, and nothing good may be dropped because of one.  What
goes to the tasks has passed the tasks' own checks and is plain UTF-8
text, so a message the task would refuse is reported here instead of
failing (with its whole batch) in a worker.

Unknown fields are ignored.  Only a body that is not JSON or whose outer
structure is wrong (not a ``whatsapp_business_account`` object with an
``entry`` list) raises :class:`WebhookFormatError`; a body whose every
part is a problem parses to a notification with nothing but problems.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from app.conversation import InboundMessage
from app.errors import AppError
from app.inbound import describe
from app.status import StatusUpdate, error_code
from app.untrusted import brief, encodable, json_type, text

__all__ = ["BODY", "Notification", "Problem", "WebhookFormatError", "parse_body", "parse_notification",
           "conversation_key"]

#: The ``object`` of WhatsApp Business Account notifications.
WABA_OBJECT = "whatsapp_business_account"
#: Where a problem of the whole body is.
BODY = "body"

#: Integers with more digits are read as floats (infinity): Python may
#: refuse to convert them (a quadratic conversion, CVE-2020-10735; 640 is
#: the lowest limit it can be set to), which would reject a whole body for
#: one number in a field nobody reads.
_MAX_INT_DIGITS = 640


class WebhookFormatError(AppError, ValueError):
    """A signed body that is not a notification this service understands."""


@dataclass(frozen=True)
class Problem:
    """A part of a body that could not be used: where it is, and why.

    ``where`` is a path into the body (``entry[1].changes[0].value.messages``);
    ``reason`` is short, safe text (cut, lone surrogates escaped), because it
    is stored in Redis and sent back in the answer.
    """

    where: str
    reason: str

    def __str__(self) -> str:
        return self.reason if self.where == BODY else f"{self.where}: {self.reason}"


@dataclass
class Notification:
    """What one webhook body holds, in order of appearance."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing in the body can be stored or counted (problems aside)."""
        return not (self.messages or self.statuses or self.errors)

    def summary(self, limit: int = 10) -> str:
        """The first ``limit`` problems in one line, and how many more there are."""
        listed = "; ".join(str(p) for p in self.problems[:limit])
        more = len(self.problems) - limit
        return f"{listed}; and {more} more" if more > 0 else listed

    def problem(self, where: str, reason: str) -> None:
        """Add a problem; its reason may quote the body, so it is made safe text."""
        self.problems.append(Problem(where, text(reason)))


def conversation_key(message: dict[str, Any]) -> str | None:
    """The customer a message belongs to: ``wa_id`` when known, else ``user_id``."""
    return message.get("wa_id") or message.get("user_id")


def _parse_int(digits: str) -> int | float:
    return int(digits) if len(digits) <= _MAX_INT_DIGITS else float(digits)


def parse_body(raw: bytes) -> Notification:
    """Decode a raw body (UTF-8 JSON) and parse it.

    Raises:
      WebhookFormatError: not JSON, nested deeper than the decoder goes, or
        not shaped as a notification.
    """
    try:
        body = json.loads(raw, parse_int=_parse_int)
    except RecursionError:
        raise WebhookFormatError("the body is nested too deeply to be a notification") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise WebhookFormatError(f"the body is not valid JSON: {text(str(e))}") from None
    return parse_notification(body)


def _optional_list(value: Any, where: str, result: Notification) -> list[Any]:
    """``value`` when it is a list, [] when absent; anything else is a problem."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    result.problem(where, f"must be a list, got {json_type(value)}")
    return []


def parse_notification(body: Any) -> Notification:
    """Parse a decoded notification; see the module docstring.

    Raises:
      WebhookFormatError: the body is not an object of
        ``whatsapp_business_account`` with an ``entry`` list.
    """
    if not isinstance(body, dict):
        raise WebhookFormatError(f"the body must be a JSON object, got {json_type(body)}")
    if body.get("object") != WABA_OBJECT:
        raise WebhookFormatError(f"object must be {WABA_OBJECT!r}, got {brief(body.get('object'))}")
    entries = body.get("entry")
    if entries is None:
        raise WebhookFormatError("the body has no entry list")
    if not isinstance(entries, list):
        raise WebhookFormatError(f"entry must be a list, got {json_type(entries)}")
    result = Notification()
    for i, entry in enumerate(entries):
        _parse_entry(entry, f"entry[{i}]", result)
    return result


def _parse_entry(entry: Any, where: str, result: Notification) -> None:
    if not isinstance(entry, dict):
        result.problem(where, f"an entry must be an object, got {json_type(entry)}")
        return
    for j, change in enumerate(_optional_list(entry.get("changes"), f"{where}.changes", result)):
        _parse_change(change, f"{where}.changes[{j}]", result)


def _parse_change(change: Any, where: str, result: Notification) -> None:
    if not isinstance(change, dict):
        result.problem(where, f"a change must be an object, got {json_type(change)}")
        return
    if not isinstance(change.get("field"), str):
        result.problem(where, f"a change must name its field, got {brief(change.get('field'))}")
        return
    if change["field"] != "messages":
        return  # account, template and other notifications are not this service's
    if not isinstance(change.get("value"), dict):
        result.problem(f"{where}.value", f"must be an object, got {json_type(change.get('value'))}")
        return
    _parse_value(change["value"], f"{where}.value", result)


def _parse_value(value: dict[str, Any], where: str, result: Notification) -> None:
    contacts = []
    for k, contact in enumerate(_optional_list(value.get("contacts"), f"{where}.contacts", result)):
        if isinstance(contact, dict):
            contacts.append(contact)
        else:
            result.problem(f"{where}.contacts[{k}]", f"a contact must be an object, got {json_type(contact)}")
    for k, message in enumerate(_optional_list(value.get("messages"), f"{where}.messages", result)):
        try:
            result.messages.append(_message(message, contacts))
        except ValueError as e:
            result.problem(f"{where}.messages[{k}]", str(e))
    for k, status in enumerate(_optional_list(value.get("statuses"), f"{where}.statuses", result)):
        try:
            result.statuses.append(_status(status))
        except ValueError as e:
            result.problem(f"{where}.statuses[{k}]", str(e))
    for k, error in enumerate(_optional_list(value.get("errors"), f"{where}.errors", result)):
        if not isinstance(error, dict):
            result.problem(f"{where}.errors[{k}]", f"an error must be an object, got {json_type(error)}")
            continue
        try:
            result.errors.append(_utf8(_error(error)))
        except ValueError as e:
            result.problem(f"{where}.errors[{k}]", str(e))


def _message(message: Any, contacts: list[dict[str, Any]]) -> dict[str, Any]:
    """The inbound message dict of ``message``.

    Raises:
      ValueError: :func:`describe` or the task's own check
        (:meth:`InboundMessage.parse`) refuses it, or it is not UTF-8 text.
    """
    described = _utf8(describe(message, contacts))
    InboundMessage.parse(described)  # the task's check: one refused message would fail its whole batch
    return described


def _utf8(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` (a flat dict, or holding a list of flat dicts), when its text can be stored.

    JSON may spell a lone surrogate (``"\\ud800"``); Redis's client, the
    broker and PostgreSQL all refuse to encode one.

    Raises:
      ValueError: a string in ``item`` holds a lone surrogate.
    """
    for name, value in item.items():
        values = value if isinstance(value, list) else [value]
        for element in values:
            strings = element.values() if isinstance(element, dict) else [element]
            for string in strings:
                if isinstance(string, str) and not encodable(string):
                    raise ValueError(f"{name} is not valid Unicode text (it holds a lone surrogate)")
    return item


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _error(error: dict[str, Any]) -> dict[str, Any]:
    """A system-level error as it is logged and counted: scalars only (it is
    logged with ``%s``, which renders anything else whole)."""
    details = error.get("error_data")
    return {
        "code": error_code(error.get("code")),
        "title": _str(error.get("title")),
        "message": _str(error.get("message")),
        "details": _str(details.get("details")) if isinstance(details, dict) else None,
    }


def _status(status: Any) -> dict[str, Any]:
    """The fields of a status that ``update_message_status_task`` reads.

    Raises:
      ValueError: the status would be refused by the task, or is not
        UTF-8 text.
    """
    StatusUpdate.parse(status)  # the task's own check, so a bad status is reported here
    # (an absent timestamp is read as 0: passing it on as None would fail the task's check)
    out: dict[str, Any] = {"id": status["id"], "status": status["status"], "timestamp": status.get("timestamp", 0)}
    for name in ("recipient_id", "recipient_user_id", "biz_opaque_callback_data"):
        if isinstance(status.get(name), str):
            out[name] = status[name]
    errors = status.get("errors")
    kept = []
    for e in errors if isinstance(errors, list) else []:
        if isinstance(e, dict):
            one = {"code": error_code(e.get("code")), "title": _str(e.get("title")), "message": _str(e.get("message"))}
            kept.append({k: v for k, v in one.items() if v is not None})
    if kept:
        out["errors"] = kept
    return _utf8(out)
