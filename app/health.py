"""What the web app reads about the workers, in a shape both sides share.

``actors/health.py`` builds a :data:`BrokerProbe` from the node registry and
the broker's queue sizes; ``wsgi.py`` hands it to the web app, which shows it
in ``/health`` and ``/metrics``.  This module sits below both: it knows
nothing of HTTP, Redis or Dramatiq.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["BrokerSnapshot", "BrokerProbe", "QUEUE_STATES"]

#: What :meth:`RedisBroker.queue_sizes` counts per queue, in this order.
QUEUE_STATES = ("waiting", "delayed", "inflight", "dead")


@dataclass(frozen=True)
class BrokerSnapshot:
    """What Redis says about the workers, read in one probe.

    Attributes:
      nodes: live worker nodes (the registry's, one per worker invocation).
      queues: per queue (``default``, ``state``) its counts by state
        (``waiting``, ``delayed``, ``inflight``, ``dead``).
    """

    nodes: int
    queues: Mapping[str, Mapping[str, int]]


#: Reads a :class:`BrokerSnapshot` from Redis; raises when Redis fails.
BrokerProbe = Callable[[], BrokerSnapshot]
