"""The per-conversation lock: one writer per LangGraph thread.

LangGraph's checkpointers fork a thread's history when two runs write
it at once, so "read checkpoint, call the model, save, send" runs under
this lock.  It is a Redis key holding a random token, set with NX and a
TTL longer than a task's hard time limit (a holder that dies frees it
by expiry), and released only by its holder: a Lua script deletes it
only if it still holds that holder's token.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import redis

from app.errors import AppError

__all__ = ["ConversationBusy", "conversation_lock", "lock_key"]

# KEYS: lock.  ARGV: token.  Deletes the lock only for its holder.
_RELEASE = """
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


def lock_key(conversation: str) -> str:
    return f"app:lock:{conversation}"


@contextlib.contextmanager
def conversation_lock(client: redis.Redis, conversation: str, *, ttl_s: float) -> Iterator[str]:
    """Hold ``conversation``'s lock for the block.

    Parameters:
      ttl_s: how long the lock outlives a holder that dies; longer than
        the task's hard time limit, so it never expires under a live task.

    Raises:
      ConversationBusy: someone else holds it.
    """
    token = secrets.token_hex(16)
    key = lock_key(conversation)
    if not client.set(key, token, nx=True, px=int(ttl_s * 1000)):
        raise ConversationBusy(conversation)
    try:
        yield token
    finally:
        client.eval(_RELEASE, 1, key, token)
