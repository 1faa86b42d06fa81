"""Stop a plain ``dramatiq actors`` worker process whose Redis refuses REDIS_URI's password."""

from __future__ import annotations

import logging

import redis
from dramatiq import Middleware

from app.redis_access import auth_failure

__all__ = ["RedisAccessCheck", "EX_BROKER_CONNECT"]

logger = logging.getLogger(__name__)

#: Dramatiq's exit code for "broker connection failed during worker startup".
EX_BROKER_CONNECT = 3


class RedisAccessCheck(Middleware):
    """At boot, one PING: a refused password ends the process with one line.

    Without it, ``dramatiq actors`` would log connection errors from every
    consumer thread forever, since the threads retry what looks like an
    outage.  A Redis that is down is left to those retries: it comes back.
    (``celery -A tasks worker`` checks in :func:`actors.node_process.wait_for_redis`.)

    Parameters:
      redis_uri: REDIS_URI, to tell a missing password from a wrong one.
    """

    def __init__(self, redis_uri: str) -> None:
        self.redis_uri = redis_uri

    def after_process_boot(self, broker):
        # Emitted by the plain dramatiq CLI only, in each worker process.
        try:
            broker.client.ping()
        except redis.RedisError as e:
            refused = auth_failure(e, self.redis_uri)
            if refused is None:
                return
            logger.critical("%s", refused)
            # (BaseException: a middleware's Exception would be logged and ignored)
            raise SystemExit(EX_BROKER_CONNECT) from None
