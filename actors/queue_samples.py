"""A short history of each queue's sizes, for the monitor's broker chart.

The monitor takes a sample every few seconds (:func:`take_sample`) and
keeps the newest :data:`KEEP` per queue in a Redis list, so the chart
survives a monitor restart and two monitors share one series.  Longer
history is Prometheus's job (``assistant_queue_messages``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import redis

from actors import keys, queue_browser

if TYPE_CHECKING:
    from actors.broker import RedisBroker

__all__ = ["KEEP", "queue_stats", "take_sample", "samples"]

#: Samples kept per queue (at one every 5 s: the last 10 minutes).
KEEP = 120


def queue_stats(broker: RedisBroker, queue: str) -> dict[str, Any]:
    """A queue's waiting/delayed/inflight/dead counts (read atomically) and its oldest waiting age."""
    sizes = broker.queue_sizes(queue)
    return {**{k: int(v) for k, v in sizes.items()},
            "oldest_age_s": queue_browser.oldest_waiting_age_s(broker, queue)}


def take_sample(broker: RedisBroker, queues: tuple[str, ...] | list[str], *, keep: int = KEEP) -> dict[str, Any]:
    """Record one sample of every queue; returns them by queue."""
    now = time.time()
    taken = {q: {"t": now, **queue_stats(broker, q)} for q in queues}
    with broker.client.pipeline(transaction=True) as pipe:
        for queue, sample in taken.items():
            pipe.lpush(keys.queue_samples_key(queue), json.dumps(sample))
            pipe.ltrim(keys.queue_samples_key(queue), 0, keep - 1)
        pipe.execute()
    return taken


def samples(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The kept samples of ``queue``, oldest first."""
    found = []
    for raw in reversed(client.lrange(keys.queue_samples_key(queue), 0, -1)):
        try:
            found.append(json.loads(raw))
        except ValueError:
            continue
    return found
