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
  the conversation's messages, each exactly once, and each has its outbox
  row: ``sent`` with the wamid WhatsApp returned for that send, and an AI
  message row; nothing is left ``sending``, ``unknown`` or ``failed``;
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
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {"sent": self.sent, "replies": self.replies, "duplicates": self.duplicates, "lost": self.lost,
                "batches": self.batches}

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
    named = Counter()
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


def _claimed_batches(stack: Stack, wa_id: str) -> dict[str, list[str]]:
    """Batch id -> the wamids it holds, of every batch the buffer checks claimed."""
    batches = {}
    for payload in stack.redis.hvals(f"app:claimed:{wa_id}"):
        batches[hashlib.sha1(payload).hexdigest()] = [json.loads(e)["wamid"] for e in json.loads(payload)]
    return batches


def _check_records(result: Audit, session: Session, stack: Stack, wa_id: str, wamids: list[str],
                   sends: list[dict[str, Any]]) -> None:
    batches = _claimed_batches(stack, wa_id)
    result.batches += len(batches)
    claimed = Counter(w for batch in batches.values() for w in batch)
    if sorted(claimed.elements()) != sorted(wamids):
        result.problems.append(f"{wa_id}: the claimed batches do not split its messages: {dict(claimed)}")
    conversation = session.scalars(select(Conversation).where(Conversation.customer_key == wa_id)).one_or_none()
    if conversation is None:
        result.problems.append(f"{wa_id}: no conversation stored")
        return
    stored = session.scalars(select(Message.wamid).where(Message.conversation_id == conversation.id,
                                                         Message.author == "customer")).all()
    if sorted(stored) != sorted(wamids):
        result.problems.append(f"{wa_id}: {len(stored)} inbound messages stored, {len(wamids)} sent")
    entries = {e.key: e for e in session.scalars(select(OutboxEntry)
                                                 .where(OutboxEntry.conversation_id == conversation.id))}
    sent_as = {s.get("biz_opaque_callback_data"): s["wamid"] for s in sends}
    if set(entries) != set(batches):
        result.problems.append(f"{wa_id}: outbox keys {sorted(entries)} are not its batches {sorted(batches)}")
    for key, entry in entries.items():
        if (entry.state, entry.wamid) != ("sent", sent_as.get(key)):
            result.problems.append(f"{wa_id}: outbox {key} is {entry.state} {entry.wamid}, "
                                   f"WhatsApp accepted {sent_as.get(key)}")
    replies = session.scalars(select(Message).where(Message.conversation_id == conversation.id,
                                                    Message.author == "ai")).all()
    if sorted(m.batch_id or "" for m in replies) != sorted(entries):
        result.problems.append(f"{wa_id}: AI message rows {sorted(m.batch_id or '' for m in replies)} "
                               f"are not its outbox keys")


def audit(stack: Stack, load: Load, sessions: sessionmaker[Session]) -> Audit:
    """Check every conversation of ``load`` against the stand-in's record, Redis and the database."""
    sends = [s for s in stack.sends() if s.get("to") in load.conversations]
    result = Audit(sent=load.size, replies=len(sends))
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for send in sends:
        by_customer.setdefault(send["to"], []).append(send)
    with sessions() as session:
        for wa_id, messages in load.conversations.items():
            mine = by_customer.get(wa_id, [])
            _check_replies(result, wa_id, [m.text for m in messages], mine)
            _check_records(result, session, stack, wa_id, [m.wamid for m in messages], mine)
    return result
