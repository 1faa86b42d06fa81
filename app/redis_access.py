"""Telling a Redis that refuses REDIS_URI's credentials from one that is down.

A Redis that is down or restarting comes back by itself, so workers wait for
it.  One that refuses the password never will: waiting only hides a
configuration error behind endless "cannot connect" lines.  The commands
that start a worker or the monitor stop at once with
:func:`auth_failure`'s one line instead (the password masked).
"""

from __future__ import annotations

import redis

from app.config import mask_url, url_passwords

__all__ = ["auth_failure"]

#: Redis's words for refused credentials (redis-py raises AuthenticationError
#: for them, but a RESP3 handshake or a proxy may return them as plain errors).
_REFUSALS = ("wrongpass", "noauth", "invalid username-password", "authentication required",
             "hello must be called with the client already authenticated")


def auth_failure(error: BaseException, redis_uri: str) -> str | None:
    """The readable reason when ``error`` says Redis refused ``redis_uri``'s
    credentials, else None (Redis down, timed out, anything else)."""
    message = str(error)
    if not (isinstance(error, redis.AuthenticationError) or any(w in message.lower() for w in _REFUSALS)):
        return None
    if url_passwords(redis_uri):
        problem = "it refused the password in REDIS_URI"
    else:
        problem = "it requires a password and REDIS_URI has none"
    if "hello must be called" in message.lower():
        # (RESP3's long way of saying it)
        message = "Authentication required"
    for secret in url_passwords(redis_uri):
        message = message.replace(secret, "**")
    return (f"Redis authentication failed at {mask_url(redis_uri)}: {problem} ({message.rstrip('.')}). "
            "Put the right password in REDIS_URI (redis://:PASSWORD@host:port/db).")
