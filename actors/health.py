"""The broker side of ``/health`` and the web app's ``/metrics``: nodes and queue sizes.

The web app may not import the actors, so ``wsgi.py`` builds this probe and
hands it to ``create_app``.  It reads the node registry
(:func:`actors.registry.live_nodes`) and each queue's sizes
(:meth:`actors.broker.RedisBroker.queue_sizes`, one atomic script) through
a Redis client of its own, with short timeouts and no retries: a probe
that hangs on Redis is abandoned by the web app at its deadline, and its
connection gives up soon after instead of piling up.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from actors import registry
from actors.broker import RedisBroker
from actors.periodic import QUEUES
from app.config import Config
from app.health import BrokerSnapshot

__all__ = ["BrokerHealth", "PROBE_SOCKET_TIMEOUT_S"]

#: Seconds the probe's connection waits to connect, and for each answer.
PROBE_SOCKET_TIMEOUT_S = 1.0


class BrokerHealth:
    """A :data:`app.health.BrokerProbe`: ``probe()`` reads a :class:`BrokerSnapshot`.

    Parameters:
      client: the Redis client to read with; by default one built from
        ``config.redis_uri`` with :data:`PROBE_SOCKET_TIMEOUT_S` and no retries.
      queues: the queues whose sizes are read.

    Raises (from ``__call__``):
      redis.RedisError: Redis did not answer, or refused.
    """

    def __init__(self, config: Config, *, client: redis.Redis | None = None,
                 queues: tuple[str, ...] = QUEUES) -> None:
        if client is None:
            client = redis.Redis.from_url(
                config.redis_uri,
                socket_connect_timeout=PROBE_SOCKET_TIMEOUT_S,
                socket_timeout=PROBE_SOCKET_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                # NOTE: a small pool: a probe waits for none, and one hung call holds one connection.
                max_connections=4,
            )
        self.client = client
        self.queues = queues
        # A broker on the probe's client, for its queue_sizes script; it declares
        # no actor and runs no middleware and no upkeep.
        self._sizes = RedisBroker(client=client, middleware=[])

    def __call__(self) -> BrokerSnapshot:
        nodes = registry.live_nodes(self.client)
        sizes = {queue: self._sizes.queue_sizes(queue) for queue in self.queues}
        return BrokerSnapshot(nodes=len(nodes), queues=sizes)

    def close(self) -> None:
        self.client.close()
