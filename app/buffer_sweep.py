"""Finding conversations whose buffer check was lost.

Every append to a buffer schedules a check (``check_buffer_task``) for
the buffer window.  If that enqueue failed, or the delayed check was
lost, the messages would wait for ever.  A buffer whose last message is
older than the window plus a margin has certainly been missed: its
check, due at the window, would have claimed it.  Sending a check for
the buffer's current sequence number again is safe: a check gives way to
a newer sequence number, and a second check for the same number gets the
batch the first one claimed (see :func:`app.buffer.claim_batch`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

import redis

from app.buffer import conversation_key

__all__ = ["LostCheck", "find_lost_checks", "iter_lost_checks", "note_resent", "forget_resent"]

_BUFFER_PREFIX = conversation_key("buffer", "")


@dataclass(frozen=True)
class LostCheck:
    """A conversation to check again, at its current sequence number."""

    conversation: str
    seq: int


def _int(raw: bytes | None) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def iter_lost_checks(client: redis.Redis, *, now_ms: int, quiet_ms: int) -> Iterator[LostCheck]:
    """Conversations with waiting messages, the last appended more than ``quiet_ms`` ago,
    through the whole keyspace (a caller that stops early stops the scan).

    Parameters:
      now_ms: Redis's clock, the one the buffer's arrival times are
        written by (see :mod:`app.buffer`); a host's clock would be off
        by its skew.
      quiet_ms: the buffer window plus a margin.
    """
    names: list[str] = []
    for key in client.scan_iter(match=_BUFFER_PREFIX + "*", count=500):
        names.append((key.decode() if isinstance(key, bytes) else key)[len(_BUFFER_PREFIX):])
        if len(names) >= 500:
            yield from _lost_among(client, names, now_ms, quiet_ms)
            names = []
    if names:
        yield from _lost_among(client, names, now_ms, quiet_ms)


def find_lost_checks(client: redis.Redis, *, now_ms: int, quiet_ms: int, limit: int = 1000) -> list[LostCheck]:
    """The first ``limit`` of :func:`iter_lost_checks`."""
    return list(islice(iter_lost_checks(client, now_ms=now_ms, quiet_ms=quiet_ms), limit))


def _lost_among(client: redis.Redis, conversations: list[str], now_ms: int, quiet_ms: int) -> list[LostCheck]:
    with client.pipeline(transaction=False) as pipe:
        for conversation in conversations:
            pipe.llen(conversation_key("buffer", conversation))
            pipe.get(conversation_key("last", conversation))
            pipe.get(conversation_key("first", conversation))
            pipe.get(conversation_key("seq", conversation))
        replies = pipe.execute()
    lost = []
    for i, conversation in enumerate(conversations):
        length, last, first, seq = replies[4 * i: 4 * i + 4]
        # Buffers written before last-at existed have only first-at.
        appended = _int(last) if last is not None else _int(first)
        seq_number = _int(seq)
        if length and appended is not None and seq_number and now_ms - appended > quiet_ms:
            lost.append(LostCheck(conversation, seq_number))
    return lost


def note_resent(client: redis.Redis, lost: LostCheck, *, resend_after_s: int) -> bool:
    """Record that a check for ``lost`` is sent again; False if one was within ``resend_after_s``.

    Keeps two sweeps (or two beats) from queueing the same check again and
    again while no worker runs; after ``resend_after_s`` a check that was
    lost once more is sent again.
    """
    return bool(client.set(_resent_key(lost), "1", nx=True, ex=max(1, int(resend_after_s))))


def forget_resent(client: redis.Redis, lost: LostCheck) -> None:
    """Undo :func:`note_resent` when the check could not be sent after all."""
    client.delete(_resent_key(lost))


def _resent_key(lost: LostCheck) -> str:
    return conversation_key("resent", f"{lost.conversation}:{lost.seq}")
