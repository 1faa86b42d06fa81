"""The per-conversation lock: one writer per LangGraph thread.

LangGraph's checkpointers fork a thread's history when two runs write
it at once, so "read checkpoint, call the model, save, send" runs under
this lock.  It is a Redis key holding a random token, set with NX and a
TTL, and released only by its holder: a Lua script deletes it only if
it still holds that holder's token.

Three things end a lock, and each keeps the one-writer rule:

- its holder's release, when the block ends (however it ends);
- the cleanup after the holder's process died: with ``held_in``, taking
  the lock also records it (lock key -> token) in a hash of the
  holder's process, in the same Redis step.  Whoever knows that process
  is gone (its supervisor reaped it; it is exiting without finishing its
  tasks) deletes every lock recorded there that still holds the recorded
  token, so a dead holder blocks its conversation for seconds, not for
  the whole TTL, and a lock taken since by someone else is never touched.
  A process that is only silent (swept by the broker) keeps its locks:
  it may still be writing;
- its TTL, the backstop when nobody sees the holder die.  The caller
  sizes it to outlast the running task's effective hard time limit,
  whatever set that limit (see :mod:`actors.conversation_locks`), so it
  never expires under a task that is still allowed to run.

A release that cannot reach Redis (an outage, a restart) is not given up:
the lock would stay taken for its whole TTL, minutes in which every task
of that conversation, the retry of the very task that held it included,
finds it busy.  The process keeps such a lock as unreleased and releases
it as soon as Redis answers again (:func:`release_unreleased`, called
before each take and by the worker's upkeep thread), or forgets it once its
TTL has passed (Redis dropped it then).  So does a take whose
answer was lost: Redis may have taken the lock without the holder knowing.
A late release is safe: it deletes the lock only while it still holds the
holder's token, and the holder's block has ended.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from app.errors import AppError

__all__ = ["ConversationBusy", "LockTerms", "conversation_lock", "lock_key", "release_unreleased"]

logger = logging.getLogger(__name__)

# KEYS: lock[, held].  ARGV: token, TTL in ms.  Takes the lock and records
# it for the holder's process in one step: a holder that dies right after
# taking it never leaves a lock nobody knows it held.  The record lives at
# least as long as the lock, so an unswept record cannot outlive it for good.
_TAKE = """
if not redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
  return 0
end
if KEYS[2] then
  redis.call("HSET", KEYS[2], KEYS[1], ARGV[1])
  if redis.call("PTTL", KEYS[2]) < tonumber(ARGV[2]) then
    redis.call("PEXPIRE", KEYS[2], ARGV[2])
  end
end
return 1
"""

# KEYS: lock[, held].  ARGV: token.  Deletes the lock and its record only
# while they hold this holder's token.
_RELEASE = """
if KEYS[2] and redis.call("HGET", KEYS[2], KEYS[1]) == ARGV[1] then
  redis.call("HDEL", KEYS[2], KEYS[1])
end
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
"""


class ConversationBusy(AppError):
    """Another task holds the conversation's lock; try again shortly.

    Not a failure: the task re-enqueues itself without counting a retry.
    """

    def __init__(self, conversation: str) -> None:
        super().__init__(f"conversation {conversation!r} is busy with another task")
        self.conversation = conversation


@dataclass(frozen=True)
class LockTerms:
    """How a lock taken now is held; decided by whoever runs the task.

    Attributes:
      ttl_s: how long the lock outlives a holder that neither releases it
        nor is seen to die; longer than the running task may run.
      held_in: the hash that records the locks of the holder's process,
        freed by whoever finds that process dead; None: only the TTL
        frees a dead holder's lock.
    """

    ttl_s: float
    held_in: str | None = None


def lock_key(conversation: str) -> str:
    return f"app:lock:{conversation}"


@contextlib.contextmanager
def conversation_lock(client: redis.Redis, conversation: str, *, ttl_s: float,
                      held_in: str | None = None) -> Iterator[str]:
    """Hold ``conversation``'s lock for the block.

    Parameters:
      ttl_s: how long the lock outlives a holder that dies unseen; longer
        than the task's effective hard time limit, so it never expires
        under a live task.
      held_in: see :class:`LockTerms`.

    Raises:
      ConversationBusy: someone else holds it.
    """
    release_unreleased()
    token = secrets.token_hex(16)
    key = lock_key(conversation)
    keys = [key] if held_in is None else [key, held_in]
    try:
        taken = client.eval(_TAKE, len(keys), *keys, token, max(1, int(ttl_s * 1000)))
    except redis.RedisError:
        # Redis may have taken it and lost only its answer.
        _UNRELEASED.add(client, keys, token, ttl_s)
        raise
    if not taken:
        raise ConversationBusy(conversation)
    try:
        yield token
    finally:
        try:
            client.eval(_RELEASE, len(keys), *keys, token)
        except redis.RedisError as e:
            # The block's own outcome stands; the lock is released when Redis answers again.
            logger.warning("Could not release the lock of conversation %s (%r); it is released as soon as "
                           "Redis answers again.", conversation, e)
            _UNRELEASED.add(client, keys, token, ttl_s)


@dataclass(frozen=True)
class _Entry:
    client: redis.Redis
    keys: list[str]
    token: str
    #: When (monotonic s) the lock has expired in Redis anyway: no later than
    #: ``ttl_s`` after the failed call, which came after the lock was set.
    gone_at: float


class _Unreleased:
    """The locks of this process whose release did not reach Redis.

    Each is kept until Redis accepts its release or its TTL has passed (Redis
    dropped it then), so a Redis that stays away does not make the list grow
    for good.  A round stops trying a client at its first connection error or
    timeout: each attempt would wait for the same socket timeout, and the
    worker's upkeep thread, which beats for the process, runs these rounds.
    """

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._mutex = threading.Lock()

    def add(self, client: redis.Redis, keys: list[str], token: str, ttl_s: float) -> None:
        with self._mutex:
            self._entries.append(_Entry(client, keys, token, time.monotonic() + ttl_s))

    def release(self) -> int:
        """Release what Redis accepts now; the rest is kept for the next call."""
        with self._mutex:
            entries, self._entries = self._entries, []
        now = time.monotonic()
        kept = []
        unreachable: list[redis.Redis] = []
        done = 0
        for entry in entries:
            if entry.gone_at <= now:
                continue
            if any(entry.client is c for c in unreachable):
                kept.append(entry)
                continue
            try:
                entry.client.eval(_RELEASE, len(entry.keys), *entry.keys, entry.token)
            except (redis.ConnectionError, redis.TimeoutError):
                unreachable.append(entry.client)
                kept.append(entry)
            except redis.RedisError:
                kept.append(entry)
            else:
                done += 1
        with self._mutex:
            self._entries.extend(kept)
        if done:
            logger.info("Released %d conversation lock(s) a Redis failure had left taken.", done)
        return done


_UNRELEASED = _Unreleased()


def release_unreleased() -> int:
    """Release the locks of this process that a Redis failure left taken (see the
    module docstring); those Redis still cannot take are kept for the next call.

    Returns:
      How many were released (or found already gone or taken by another holder).
    """
    return _UNRELEASED.release()
