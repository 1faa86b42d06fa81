"""A Redis lease: at most one holder at a time, renewed, released only by its holder.

``celery beat`` runs in two places for availability; only the holder of
the lease fires jobs.  The lease is a key set with ``SET NX PX`` to a
random token; renewing and releasing compare the token in Lua, so a
holder that was paused past the lease's end can neither extend nor
delete the lease another process took since.  Firing is fenced as well
(:meth:`Lease.claim_run`): a job runs for a period only if the caller
still holds the lease *and* the period was not run yet, in one step.
"""

from __future__ import annotations

import os
import socket
import uuid

import redis

from app.redis_clock import NOW_MS_LUA

__all__ = ["Lease"]

# KEYS[1] lease.  ARGV[1] token, ARGV[2] ttl ms.  1 if renewed.
_RENEW = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] lease.  ARGV[1] token.  1 if released.
_RELEASE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
"""

# KEYS[1] lease, KEYS[2] the job's last period.  ARGV[1] token,
# ARGV[2] the job's interval (ms), ARGV[3] how long to remember the period (ms).
# The period is the nearest multiple of the interval by Redis's clock, so
# beat hosts whose clocks disagree still agree on it.  Returns the period
# if the caller holds the lease and nobody ran it yet, else -1.
_CLAIM_RUN = NOW_MS_LUA + """
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  return -1
end
local period = math.floor(now / tonumber(ARGV[2]) + 0.5)
local last = tonumber(redis.call("GET", KEYS[2]) or "-1")
if last >= period then
  return -1
end
redis.call("SET", KEYS[2], period, "PX", ARGV[3])
return period
"""


class Lease:
    """One process's view of a lease in Redis.

    Parameters:
      client: Redis.
      key: the lease's key.
      ttl_ms: how long the lease lasts without a renewal.
    """

    def __init__(self, client: redis.Redis, key: str, *, ttl_ms: int) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_ms)
        #: Who holds it, for operators reading the key: host, pid, random part.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._claim_run = client.register_script(_CLAIM_RUN)

    def acquire_or_renew(self) -> bool:
        """Take the lease if it is free, or extend it if it is ours.  True while we hold it.

        Raises:
          redis.RedisError: Redis did not answer (the caller must then
            assume it does not hold the lease).
        """
        if self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
            return True
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def release(self) -> bool:
        """Give the lease up if it is still ours (a clean exit: the standby takes over at once)."""
        return bool(self._release(keys=[self.key], args=[self.token]))

    def holder(self) -> str | None:
        """The token of the current holder, if any."""
        value = self.client.get(self.key)
        if isinstance(value, bytes):
            return value.decode()
        return None if value is None else str(value)

    def claim_run(self, run_key: str, *, interval_ms: int, remember_ms: int) -> int | None:
        """Claim the current period of a job run every ``interval_ms``, by Redis's clock.

        Returns:
          The period's number if we hold the lease and it was not run yet
          (it is now marked run), else None.
        """
        period = int(self._claim_run(keys=[self.key, run_key], args=[self.token, int(interval_ms), int(remember_ms)]))
        return None if period < 0 else period
