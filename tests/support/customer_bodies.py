"""Signed-ready webhook bodies from many distinct customers.

The text fixture names one customer by both ids (``wa_id`` and the
business-scoped ``user_id``); changing only the number makes every body
the same customer under a new number (one conversation).  These change both.
"""

from __future__ import annotations

import json

from tests.support.fixtures import raw

__all__ = ["text_from"]


def text_from(customer: str, wamid: str, text: str) -> bytes:
    """text.json as sent by ``customer`` (its wa_id; its user id is ``US.<customer>``)."""
    body = json.loads(raw("text.json"))
    value = body["entry"][0]["changes"][0]["value"]
    value["contacts"][0].update(wa_id=customer, user_id=f"US.{customer}")
    value["messages"][0].update({"from": customer, "id": wamid, "text": {"body": text}})
    return json.dumps(body).encode()
