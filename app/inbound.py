"""One inbound WhatsApp message as the pipeline sees it.

:func:`describe` turns a ``value.messages[]`` element into a flat dict
with exactly these keys, the contract with ``process_message_task``:

``wamid``, ``kind``, ``text`` (what the model sees; never empty for an
answerable message), ``answerable`` (False for reactions and system
messages), ``wa_id``, ``user_id``, ``profile_name``, ``timestamp`` (epoch
seconds), ``context_id`` (the quoted wamid), ``reaction_to``, ``emoji``
("" for a removed reaction), ``new_wa_id`` (system ``user_changed_number``).

Non-text messages are described in a short bracketed form (``[image]
caption``, ``[document invoice-4471.pdf]``, ``[voice note]``), never
dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.untrusted import brief, epoch_seconds

__all__ = ["describe", "MESSAGE_KEYS", "UNANSWERABLE_KINDS"]

#: The keys of every inbound message dict.
MESSAGE_KEYS = ("wamid", "kind", "text", "answerable", "wa_id", "user_id", "profile_name", "timestamp",
                "context_id", "reaction_to", "emoji", "new_wa_id")

#: Message kinds that are stored but never answered.
UNANSWERABLE_KINDS = frozenset({"reaction", "system"})


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _with_caption(label: str, payload: dict[str, Any]) -> str:
    caption = (_str(payload.get("caption")) or "").strip()
    return f"{label} {caption}" if caption else label


def _text(m: dict[str, Any]) -> str:
    return _str(_obj(m.get("text")).get("body")) or "[empty message]"


def _document(m: dict[str, Any]) -> str:
    doc = _obj(m.get("document"))
    name = _str(doc.get("filename"))
    return _with_caption(f"[document {name}]" if name else "[document]", doc)


def _audio(m: dict[str, Any]) -> str:
    return "[voice note]" if _obj(m.get("audio")).get("voice") else "[audio]"


def _coordinate(value: Any) -> str | None:
    # Only a number or a short string is written out: str() of anything else may be huge or recurse.
    if isinstance(value, str):
        return value[:32] or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return brief(value, 32)
    return None


def _location(m: dict[str, Any]) -> str:
    loc = _obj(m.get("location"))
    place = ", ".join(p for p in (_str(loc.get("name")), _str(loc.get("address"))) if p)
    lat, lon = _coordinate(loc.get("latitude")), _coordinate(loc.get("longitude"))
    where = f"({lat}, {lon})" if lat is not None and lon is not None else ""
    return " ".join(p for p in ("[location]", place, where) if p)


def _contacts(m: dict[str, Any]) -> str:
    names = []
    cards = m.get("contacts")
    for card in cards if isinstance(cards, list) else []:
        name = _obj(_obj(card).get("name"))
        full = _str(name.get("formatted_name")) or " ".join(
            p for p in (_str(name.get("first_name")), _str(name.get("last_name"))) if p)
        if full:
            names.append(full)
    return f"[contacts] {', '.join(names)}" if names else "[contacts]"


def _interactive(m: dict[str, Any]) -> str:
    data = _obj(m.get("interactive"))
    reply = _obj(data.get(_str(data.get("type")) or ""))
    title = _str(reply.get("title"))
    if title:
        return title
    if data.get("type") == "nfm_reply":
        return "[form reply]"
    return "[interactive reply]"


def _button(m: dict[str, Any]) -> str:
    button = _obj(m.get("button"))
    return _str(button.get("text")) or _str(button.get("payload")) or "[button]"


def _reaction(m: dict[str, Any]) -> str:
    emoji = _str(_obj(m.get("reaction")).get("emoji"))
    return f"[reaction {emoji}]" if emoji else "[reaction removed]"


def _system(m: dict[str, Any]) -> str:
    return _str(_obj(m.get("system")).get("body")) or "[system message]"


def _order(m: dict[str, Any]) -> str:
    order = _obj(m.get("order"))
    items = order.get("product_items")
    count = len(items) if isinstance(items, list) else 0
    note = _str(order.get("text"))
    return f"[order of {count} item(s)] {note}" if note else f"[order of {count} item(s)]"


#: What the model sees, by message type.
_DESCRIBE: dict[str, Callable[[dict[str, Any]], str]] = {
    "text": _text,
    "image": lambda m: _with_caption("[image]", _obj(m.get("image"))),
    "video": lambda m: _with_caption("[video]", _obj(m.get("video"))),
    "sticker": lambda m: "[sticker]",
    "document": _document,
    "audio": _audio,
    "location": _location,
    "contacts": _contacts,
    "interactive": _interactive,
    "button": _button,
    "reaction": _reaction,
    "system": _system,
    "order": _order,
    "unsupported": lambda m: "[unsupported message]",
}


def _kind(m: dict[str, Any], kind: str) -> str:
    if kind == "audio" and _obj(m.get("audio")).get("voice"):
        return "voice"
    return kind


def _contact_for(m: dict[str, Any], contacts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``value.contacts[]`` entry of the message's sender."""
    sender, sender_user = _str(m.get("from")), _str(m.get("from_user_id"))
    for contact in contacts:
        if (sender and contact.get("wa_id") == sender) or (sender_user and contact.get("user_id") == sender_user):
            return contact
    return contacts[0] if len(contacts) == 1 else {}


def describe(message: Any, contacts: list[dict[str, Any]]) -> dict[str, Any]:
    """The inbound message dict of one ``value.messages[]`` element.

    Raises:
      ValueError: the message lacks its id, type, timestamp or sender.
    """
    if not isinstance(message, dict):
        raise ValueError(f"a message must be an object, got {type(message).__name__}")
    wamid, kind = _str(message.get("id")), _str(message.get("type"))
    if wamid is None:
        raise ValueError("the message has no id")
    if kind is None:
        raise ValueError(f"message {wamid} has no type")
    try:
        timestamp = epoch_seconds(message.get("timestamp"))
    except ValueError:
        raise ValueError(f"message {wamid} has no timestamp in seconds: {brief(message.get('timestamp'), 40)}") \
            from None
    contact = _contact_for(message, contacts)
    wa_id = _str(message.get("from")) or _str(contact.get("wa_id"))
    user_id = _str(message.get("from_user_id")) or _str(contact.get("user_id"))
    if wa_id is None and user_id is None:
        raise ValueError(f"message {wamid} has neither from nor from_user_id")
    reaction = _obj(message.get("reaction"))
    emoji = reaction.get("emoji") if kind == "reaction" else None
    system = _obj(message.get("system"))
    text = _DESCRIBE.get(kind, lambda m: f"[{kind} message]")(message)
    return {
        "wamid": wamid,
        "kind": _kind(message, kind),
        "text": text,
        "answerable": kind not in UNANSWERABLE_KINDS,
        "wa_id": wa_id,
        "user_id": user_id,
        "profile_name": _str(_obj(contact.get("profile")).get("name")),
        "timestamp": timestamp,
        "context_id": _str(_obj(message.get("context")).get("id")),
        "reaction_to": _str(reaction.get("message_id")) if kind == "reaction" else None,
        "emoji": emoji if isinstance(emoji, str) else ("" if kind == "reaction" else None),
        "new_wa_id": _str(system.get("wa_id") or system.get("new_wa_id")) if kind == "system" else None,
    }
