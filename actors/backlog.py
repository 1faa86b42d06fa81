"""The waiting messages of a queue: its runbook list, and Celery's side lists.

Celery on Redis keeps a message of priority 3 or more out of the queue's
list, in ``<list>\\x06\\x16<step>`` (steps 3, 6 and 9), where ``LLEN``
does not count it.  Messages the old deployment left there are waiting
messages too: the workers' upkeep moves them into the queue list (see
:meth:`actors.broker.RedisBroker.adopt_celery_side_lists`), and a purge
empties them with the list.  This project itself never writes them.
"""

from __future__ import annotations

import redis

from actors import keys

__all__ = ["CELERY_PRIORITY_STEPS", "side_list_keys", "waiting_keys", "purge_waiting", "count_waiting"]

#: kombu's priority steps above 0 and its separator (kombu/transport/redis.py).
CELERY_PRIORITY_STEPS = (3, 6, 9)
_SEP = "\x06\x16"


def side_list_keys(queue: str) -> list[str]:
    """Celery's priority side lists of ``queue`` (``state\\x06\\x166`` ...)."""
    base = keys.queue_key(queue)
    return [f"{base}{_SEP}{step}" for step in CELERY_PRIORITY_STEPS]


def waiting_keys(queue: str) -> list[str]:
    """Every list that holds waiting messages of ``queue``."""
    return [keys.queue_key(queue), *side_list_keys(queue)]


def count_waiting(client: redis.Redis, queue: str) -> int:
    """How many messages wait in ``queue``, side lists included."""
    with client.pipeline(transaction=True) as pipe:
        for key in waiting_keys(queue):
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())


def purge_waiting(client: redis.Redis, queue: str) -> int:
    """Drop the waiting messages of ``queue`` in one step; returns how many there were.

    In-flight, delayed and dead-lettered messages are not waiting: they stay.
    """
    names = waiting_keys(queue)
    with client.pipeline(transaction=True) as pipe:
        for key in names:
            pipe.llen(key)
        pipe.delete(*names)
        counts = pipe.execute()[:-1]
    return sum(int(n) for n in counts)
