"""The WhatsApp webhook fixtures (shipped in app/devtools/fixtures) and signing."""

from __future__ import annotations

import json
from pathlib import Path

from app.devtools import demo

FIXTURES = Path(__file__).resolve().parents[2] / "app" / "devtools" / "fixtures"

#: The app secret tests sign with.
APP_SECRET = "test-app-secret"


def raw(name: str) -> bytes:
    """A fixture's bytes, exactly as stored (never re-serialised)."""
    return (FIXTURES / name).read_bytes()


def text_json() -> dict:
    """The text fixture's body, parsed, for a test to spoil a part of."""
    return json.loads(raw("text.json"))


def value_of(body: dict) -> dict:
    """The first change's ``value`` of a webhook body."""
    return body["entry"][0]["changes"][0]["value"]


def text_body(wamid: str, text: str, *, wa_id: str = "16505551234", **extra_fields) -> bytes:
    """text.json with another wamid and text (and sender, extra fields), as new bytes to sign."""
    body = json.loads(raw("text.json"))
    value = body["entry"][0]["changes"][0]["value"]
    message = value["messages"][0]
    message["id"], message["text"]["body"], message["from"] = wamid, text, wa_id
    value["contacts"][0]["wa_id"] = wa_id
    body.update(extra_fields)
    return json.dumps(body).encode()


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    """The X-Hub-Signature-256 header Meta would send for ``body`` (the
    demo's signing, with the tests' secret by default)."""
    return demo.sign(body, secret)


# What the fixtures' README says each must produce, where a test needs the exact words.

#: The customer of most fixtures, and their business-scoped user id.
CUSTOMER = "16505551234"
CUSTOMER_USER_ID = "US.13491208655302741918"
#: The business message several fixtures quote or react to.
QUOTED = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
#: The outbound message the status fixtures describe (the failed one has its own).
STATUS_WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
FAILED_WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJGNjI2MkE4RDQ1QzM3NzE5QjUA"

OFFLINE = "Thanks for your message! You said: "

#: fixture -> (kind stored, what the model must have seen)
ANSWERED = {
    "text.json": ("text", "Does it come in another color?"),
    "text_non_ascii.json": ("text", "Olá! Vocês entregam em São Paulo? 🚚"),
    "image_caption.json": ("image", "[image] The lamp arrived like this"),
    "document.json": ("document", "[document invoice-4471.pdf] my invoice"),
    "voice_note.json": ("voice", "[voice note]"),
    "location.json": ("location", "[location] Philz Coffee, 101 Forest Ave, Palo Alto, CA 94301 (37.4419, -122.143)"),
    "contacts.json": ("contacts", "[contacts] Chandler Bing"),
    "interactive_button_reply.json": ("interactive", "Track my order"),
    "interactive_list_reply.json": ("interactive", "Medium"),
    "template_button.json": ("button", "Reschedule delivery"),
    "reply_to_message.json": ("text", "Yes, this one"),
    "unsupported.json": ("unsupported", "[unsupported message]"),
}
