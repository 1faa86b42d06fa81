"""Did every customer get exactly the replies due, whatever broke in between?

What is due, from the domain: a conversation's messages are answered in
batches (what its buffer held when a check claimed it, in arrival
order), and every batch gets exactly one AI reply.  So, for every
conversation of a load:

- WhatsApp (the stand-in's record) accepted one send per batch, and no
  batch key twice; the offline model repeats the customer's turn, so each
  reply names the messages it answers: every message is named by exactly
  one reply (none twice: a duplicate; none missing: lost), and each
  reply names a run of consecutive messages, in the order they were sent;
- the batches the buffer checks claimed (``app:claimed:<customer>``) split
  the conversation's messages, each exactly once; every send is of one of
  them and has its outbox row, ``sent`` with the wamid WhatsApp returned
  for that send, and its AI message row; nothing is left ``sending``,
  ``unknown`` or ``failed``;
- a batch without a reply of its own is due none only when the history
  already answered it: its task died after its messages entered the
  graph and before the model's turn, and a later batch's turn took them
  in (the customer got one reply for both, which names them; counted in
  ``merged``);
- every inbound message is stored once.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Conversation, Message, OutboxEntry
from tests.chaos.load import Load
from tests.support.fixtures import OFFLINE
from tests.support.stack import Stack

__all__ = ["Audit", "audit"]

#: What the offline model writes before the customer's words.
_ECHO = OFFLINE


@dataclass
class Audit:
    """What a load got: figures, and every way it fell short of what was due."""

    sent: int = 0
    replies: int = 0
    #: Inbound messages answered more than once (each extra time counts), and
    #: batch keys WhatsApp accepted more than once.
    duplicates: int = 0
    #: Inbound messages no reply answers.
    lost: int = 0
    batches: int = 0
    #: Batches answered by a later batch's reply (see the module docstring).
    merged: int = 0
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {"sent": self.sent, "replies": self.replies, "duplicates": self.duplicates, "lost": self.lost,
                "batches": self.batches, "merged": self.merged}

    def report(self, limit: int = 25) -> str:
        more = len(self.problems) - limit
        return "\n".join(self.problems[:limit] + ([f"... and {more} more"] if more > 0 else []))


def _named(text: str) -> list[str]:
    return text[len(_ECHO):].split() if text.startswith(_ECHO) else []


def _is_run(named: list[str], order: list[str]) -> bool:
    if not named or named[0] not in order:
        return False
    start = order.index(named[0])
    return order[start:start + len(named)] == named


def _check_replies(result: Audit, wa_id: str, texts: list[str], sends: list[dict[str, Any]]) -> None:
    named: Counter[str] = Counter()
    for send in sends:
        words = _named(send["text"]["body"])
        if not _is_run(words, texts):
            result.problems.append(f"{wa_id}: a reply names no run of its messages: {send['text']['body']!r}")
        named.update(words)
    for text in texts:
        if named[text] == 0:
            result.lost += 1
            result.problems.append(f"{wa_id}: {text} was never answered")
        elif named[text] > 1:
            result.duplicates += named[text] - 1
            result.problems.append(f"{wa_id}: {text} was answered {named[text]} times")
    for key, count in Counter(s.get("biz_opaque_callback_data") for s in sends).items():
        if count > 1:
            result.duplicates += count - 1
            result.problems.append(f"{wa_id}: batch {key} was sent {count} times")


@dataclass
class _Records:
    """What Redis and the database hold for a load's conversations, read at once."""

    #: customer -> batch id -> the wamids of every batch its buffer checks claimed
    batches: dict[str, dict[str, list[str]]]
    #: customer -> wamids of its stored inbound messages (a customer without a conversation is missing)
    inbound: dict[str, list[str]]
    #: customer -> outbox key -> (state, wamid)
    outbox: dict[str, dict[str, tuple[str, str | None]]]
    #: customer -> batch ids of its AI message rows
    replies: dict[str, list[str]]


def _read_records(stack: Stack, session: Session, customers: list[str]) -> _Records:
    with stack.redis.pipeline(transaction=False) as pipe:
        for wa_id in customers:
            pipe.hvals(f"app:claimed:{wa_id}")
        claimed = pipe.execute()
    records = _Records({}, {}, {}, {})
    for wa_id, payloads in zip(customers, claimed, strict=True):
        records.batches[wa_id] = {hashlib.sha1(p).hexdigest(): [json.loads(e)["wamid"] for e in json.loads(p)]
                                  for p in payloads}
    for wa_id, in session.execute(select(Conversation.customer_key)
                                  .where(Conversation.customer_key.in_(customers))):
        records.inbound[wa_id], records.outbox[wa_id], records.replies[wa_id] = [], {}, []
    for wa_id, author, wamid, batch_id in session.execute(
            select(Conversation.customer_key, Message.author, Message.wamid, Message.batch_id)
            .join(Message, Message.conversation_id == Conversation.id)
            .where(Conversation.customer_key.in_(customers))):
        if author == "customer":
            records.inbound[wa_id].append(wamid or "")
        elif author == "ai":
            records.replies[wa_id].append(batch_id or "")
    for wa_id, key, state, wamid in session.execute(
            select(Conversation.customer_key, OutboxEntry.key, OutboxEntry.state, OutboxEntry.wamid)
            .join(OutboxEntry, OutboxEntry.conversation_id == Conversation.id)
            .where(Conversation.customer_key.in_(customers))):
        records.outbox[wa_id][key] = (state, wamid)
    return records


def _check_records(result: Audit, records: _Records, wa_id: str, texts: dict[str, str],
                   sends: list[dict[str, Any]]) -> None:
    """``texts``: wamid -> text of the conversation's messages."""
    wamids = list(texts)
    batches = records.batches[wa_id]
    result.batches += len(batches)
    claimed = Counter(w for batch in batches.values() for w in batch)
    if sorted(claimed.elements()) != sorted(wamids):
        result.problems.append(f"{wa_id}: the claimed batches do not split its messages: {dict(claimed)}")
    if wa_id not in records.inbound:
        result.problems.append(f"{wa_id}: no conversation stored")
        return
    stored = records.inbound[wa_id]
    if sorted(stored) != sorted(wamids):
        result.problems.append(f"{wa_id}: {len(stored)} inbound messages stored, {len(wamids)} sent")
    entries = records.outbox[wa_id]
    sent_as = {s.get("biz_opaque_callback_data"): s["wamid"] for s in sends}
    if set(entries) != set(sent_as) or not set(entries) <= set(batches):
        result.problems.append(f"{wa_id}: outbox keys {sorted(entries)}, sends {sorted(map(str, sent_as))} "
                               f"and batches {sorted(batches)} disagree")
    named_by = {word: s.get("biz_opaque_callback_data") for s in sends for word in _named(s["text"]["body"])}
    for batch_id, batch in batches.items():
        if batch_id not in entries:
            answered_by = {named_by.get(texts[w]) for w in batch}
            if None in answered_by or batch_id in answered_by:
                result.problems.append(f"{wa_id}: batch {batch_id} has no reply, and no other batch's answers it")
            else:
                result.merged += 1
    for key, (state, wamid) in entries.items():
        if (state, wamid) != ("sent", sent_as.get(key)):
            result.problems.append(f"{wa_id}: outbox {key} is {state} {wamid}, WhatsApp accepted {sent_as.get(key)}")
    if sorted(records.replies[wa_id]) != sorted(entries):
        result.problems.append(f"{wa_id}: AI message rows {sorted(records.replies[wa_id])} are not its outbox keys")


def audit(stack: Stack, load: Load, sessions: sessionmaker[Session]) -> Audit:
    """Check every conversation of ``load`` against the stand-in's record, Redis and the database."""
    sends = [s for s in stack.sends() if s.get("to") in load.conversations]
    result = Audit(sent=load.size, replies=len(sends))
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for send in sends:
        by_customer.setdefault(send["to"], []).append(send)
    with sessions() as session:
        records = _read_records(stack, session, list(load.conversations))
    for wa_id, messages in load.conversations.items():
        mine = by_customer.get(wa_id, [])
        _check_replies(result, wa_id, [m.text for m in messages], mine)
        _check_records(result, records, wa_id, {m.wamid: m.text for m in messages}, mine)
    return result
