"""The Redis connection of the ``celery`` sub-commands, failing as Celery does.

Celery's ``status``, ``inspect`` and ``purge`` say ``Could not connect to
the message broker. ...`` and exit 69 (EX_UNAVAILABLE) when the broker is
down; a bad ``REDIS_URI`` is a usage error (exit 2).  A Redis that refuses
REDIS_URI's password gets a line that says so (:func:`app.redis_access.auth_failure`),
with the same exit code.
"""

from __future__ import annotations

import redis

from app.config import Config
from app.errors import ConfigError
from app.redis_access import auth_failure
from facade.cli import EX_UNAVAILABLE, CliError

__all__ = ["connect", "unavailable", "CONNECT_TIMEOUT_S"]

#: How long to wait for Redis to accept the connection, in seconds.
CONNECT_TIMEOUT_S = 5.0


def unavailable(exc: BaseException, redis_uri: str | None = None) -> CliError:
    """Celery's broker-down error (``handle_remote_command_error``), exit 69; with
    ``redis_uri``, a refused password is named as such."""
    refused = auth_failure(exc, redis_uri) if redis_uri is not None else None
    if refused is not None:
        return CliError(refused, EX_UNAVAILABLE)
    return CliError(
        "Could not connect to the message broker. Please make sure your broker (e.g., RabbitMQ or Redis) "
        f"is running and the connection settings are correct. Reason: {exc}",
        EX_UNAVAILABLE,
    )


def config() -> Config:
    """The configuration from the environment (``-b`` has set REDIS_URI)."""
    try:
        return Config.from_env()
    except ConfigError as e:
        raise CliError(str(e)) from None


def connect(cfg: Config | None = None) -> redis.Redis:
    """A Redis client that has answered a PING.

    Raises:
      CliError: exit 69 when Redis cannot be reached, 2 for a bad URL.
    """
    cfg = cfg or config()
    try:
        client = redis.Redis.from_url(cfg.redis_uri, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                      socket_timeout=CONNECT_TIMEOUT_S * 2)
    except ValueError as e:
        raise CliError(f"REDIS_URI cannot be used: {e}") from None
    try:
        client.ping()
    except redis.RedisError as e:
        client.close()
        raise unavailable(e, cfg.redis_uri) from None
    return client
