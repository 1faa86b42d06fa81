"""Customers writing, and Meta confirming sends: signed webhook POSTs to a running stack.

Every inbound text is a unique token (``kc017m04``: run, conversation,
message), so the offline model's reply, which repeats the customer's
turn, says which messages it answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tests.support.stack import PHONE_NUMBER_ID, Stack

__all__ = ["Inbound", "Load", "make_load", "post", "confirm_sends"]

#: Concurrent posters (Meta sends many notifications at once).
POSTERS = 8
#: Statuses per notification when Meta confirms sends.
STATUSES_PER_BODY = 50


@dataclass(frozen=True)
class Inbound:
    wamid: str
    text: str


@dataclass
class Load:
    """The messages of many conversations: customer (wa_id) -> messages, in the order they are sent."""

    conversations: dict[str, list[Inbound]]

    @property
    def size(self) -> int:
        return sum(len(messages) for messages in self.conversations.values())


def make_load(run: str, *, conversations: int, per_conversation: int, first_wa_id: int) -> Load:
    """``conversations`` customers (consecutive numbers from ``first_wa_id``) with
    ``per_conversation`` messages each; ``run`` keeps wamids and texts unique."""
    return Load({
        str(first_wa_id + c): [Inbound(f"wamid.chaos.{run}.{c}.{m}", f"{run}c{c:03d}m{m:02d}")
                               for m in range(per_conversation)]
        for c in range(conversations)
    })


def _notification(value: dict) -> bytes:
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]
                       }).encode()


def _messages_body(wa_id: str, messages: list[Inbound]) -> bytes:
    """One notification with ``messages`` of one customer, as Meta batches them."""
    now = str(int(time.time()))
    return _notification({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": f"Customer {wa_id}"}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, "id": m.wamid, "timestamp": now, "type": "text", "text": {"body": m.text}}
                     for m in messages],
    })


def post(stack: Stack, load: Load, part: slice, *, per_body: int = 1) -> int:
    """POST messages ``part`` of every conversation, ``per_body`` to a notification (Meta
    batches several when it has them): a conversation's in order, one after the other
    (so they arrive within its buffer window), conversations at once.  Each must be
    accepted with a 200.  Returns how many messages were posted."""

    def one_customer(wa_id: str) -> int:
        messages = load.conversations[wa_id][part]
        for start in range(0, len(messages), per_body):
            chunk = messages[start:start + per_body]
            response = stack.post(_messages_body(wa_id, chunk))
            assert response.status_code == 200 and response.json()["messages"] == len(chunk), \
                f"{chunk[0].wamid}: {response.status_code} {response.text}"
        return len(messages)

    with ThreadPoolExecutor(POSTERS) as pool:
        return sum(pool.map(one_customer, load.conversations))


def confirm_sends(stack: Stack, sends: Iterable[dict]) -> int:
    """Post the ``sent`` status Meta posts for every message it accepted, echoing its
    ``biz_opaque_callback_data`` (what proves a send a crash left unrecorded).  Returns how many."""
    statuses = [{"id": send["wamid"], "status": "sent", "timestamp": str(int(time.time())),
                 "recipient_id": send["to"], "biz_opaque_callback_data": send["biz_opaque_callback_data"]}
                for send in sends]
    for start in range(0, len(statuses), STATUSES_PER_BODY):
        response = stack.post(_notification({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "statuses": statuses[start:start + STATUSES_PER_BODY]}))
        assert response.status_code == 200, response.text
    return len(statuses)
