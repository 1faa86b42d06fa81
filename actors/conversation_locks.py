"""The terms of the conversation locks the actors take: for how long, and whose.

For how long: the TTL covers the *running message's* effective hard time
limit, as :class:`actors.middleware.TimeLimits` computes it (a limit sent
with the message, ``apply_async(time_limit=...)``, else the node's
``--time-limit``, else the actor's ``TASK_TIME_LIMIT_SECONDS``), plus the
two graces after which a task stuck in C code has been replaced at the
latest (the prefork supervisor's backstop), plus a margin.  A lock sized
from the configuration alone ran out under tasks that a node started
with ``--time-limit=900`` was still running, and two writers forked the
conversation's history.

Why a TTL sized once from the limit, and not a lock renewed while held
(a watchdog thread, or renewal from the broker's heartbeat): nothing has
to run for the lock to last.  A renewing thread cannot renew while the
task holds the GIL (a C extension, a runaway regular expression) nor
while Redis is out of reach for longer than the short TTL, and either
would let the lock lapse under a task that still runs, the very fork the
lock prevents.  The limit is known when the lock is taken, and the task
cannot outlive it: the limit's exception stops it, and a task stuck past
it is replaced.  The one cost of a long TTL, a dead holder blocking its
conversation until it runs out, is removed by freeing the locks of a
process known to be gone (below) at once, which is sooner than a short
renewed TTL would free them.  (The plain ``dramatiq`` CLI cannot replace
a process whose task is stuck in C code: there the lock lapses at its
TTL while the limit's exception waits for the thread to return.)

Whose: a lock taken by a task is recorded in its process's hash of held
locks (:func:`actors.keys.held_key`), which the broker frees by token
when it gives that process's messages back and the process is known to
be gone: the supervisor's clean-up of a dead child, a process that
leaves without finishing its tasks.  The sweep of a silent process does
not free them: silent is not dead (a task holding the GIL, a host cut
off from Redis), and a freed lock would let the redelivered run write
the conversation beside the first.
"""

from __future__ import annotations

from collections.abc import Callable

from dramatiq.middleware import CurrentMessage

from actors import keys
from actors.broker import RedisBroker
from actors.middleware import TimeLimits
from actors.middleware import find as find_middleware
from actors.middleware.time_limits import HARD_LIMIT_GRACE_S
from app.lock import LockTerms

__all__ = ["lock_ttl_s", "terms_for", "LOCK_MARGIN_S"]

#: How much longer than a task may run the conversation lock lives, at
#: most (a fifth of the limit, at least 5 s).
LOCK_MARGIN_S = 60.0


def lock_ttl_s(hard_limit_s: float, grace_s: float = HARD_LIMIT_GRACE_S) -> float:
    """The lock's TTL for a task with this hard limit: the limit, the two
    graces after which a stuck task's process is killed at the latest, and
    a margin (so a live holder never loses it)."""
    return hard_limit_s + 2 * grace_s + min(LOCK_MARGIN_S, max(5.0, hard_limit_s / 5))


def terms_for(broker: RedisBroker) -> Callable[[], LockTerms]:
    """The terms of a lock taken now by a task of ``broker``'s process.

    Read when the lock is taken, in the task's thread: the message it
    runs decides the limit.  Outside a task (a script, a test calling the
    domain directly) the node's limit applies and only the TTL frees the lock.
    """
    time_limits = find_middleware(broker, TimeLimits)

    def current() -> LockTerms:
        message = CurrentMessage.get_current_message()
        if message is None:
            hard_ms = time_limits.override_time_limit_ms or time_limits.time_limit_ms
            return LockTerms(ttl_s=lock_ttl_s(hard_ms / 1000, time_limits.grace_s))
        _soft_ms, hard_ms = time_limits.limits_ms(broker, message)
        return LockTerms(ttl_s=lock_ttl_s(hard_ms / 1000, time_limits.grace_s),
                         held_in=keys.held_key(broker.broker_id))

    return current
