"""The upkeep thread of a worker process: heartbeat, sweep, delayed messages."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import redis
from dramatiq.logging import get_logger

from actors import keys
from app.lock import release_unreleased

if TYPE_CHECKING:
    from actors.broker import RedisBroker

__all__ = ["Upkeep"]

#: Most seconds one wait on the wake list lasts; below the connection's
#: socket timeout (30 s).  stop() cuts a wait short by disconnecting.
MAX_WAIT_S = 25.0

#: Dead letters are trimmed, and Celery's side lists adopted, every this
#: many beats (once a heartbeat timeout, a minute by default): nothing
#: there is urgent, and on an idle worker they were most of its Redis commands.
MAINTENANCE_EVERY = 6

#: Most seconds to wait before trying again after Redis failed (less
#: with a short heartbeat timeout: at most half a heartbeat interval).
ERROR_BACKOFF_S = 1.0


class Upkeep(threading.Thread):
    """One per worker process, started with its first consumer.

    Every sixth of the heartbeat timeout it records the heartbeat and
    gives back the messages of processes silent for half the timeout
    (freeing the conversation locks they held), so a dead worker's
    messages are back in their queue, and its conversations free, within
    the timeout.  It sweeps only once it has been connected for a whole
    interval, after starting and after every Redis failure: when Redis
    comes back from an outage, the other live workers (which retry
    sooner than that) have beaten again before anyone judges them dead.
    It also drops dead letters past their time to keep, and moves what the
    old Celery deployment left in its priority side lists into the queues,
    at its first beat and every :data:`MAINTENANCE_EVERY` beats after. At
    every beat it releases the conversation locks whose release a Redis failure
    interrupted in this process (:func:`app.lock.release_unreleased`), so
    a conversation is free soon after an outage even when no further task
    of this process takes a lock.

    In between it moves delayed messages into their queues
    when they are due: it waits on a Redis list that ``schedule.lua``
    pushes to whenever a message becomes the earliest, so a retry or a
    countdown starts on time without polling.
    """

    def __init__(self, broker: RedisBroker) -> None:
        super().__init__(name="dramatiq-upkeep", daemon=True)
        self.logger = get_logger(__name__, type(self))
        self.broker = broker
        self.interval_ms = max(100, broker.heartbeat_timeout_ms // 6)
        self.backoff_s = min(ERROR_BACKOFF_S, self.interval_ms / 2000)
        self._stopping = threading.Event()
        # Its own connection, so that stop() can cut a wait short.
        pool = broker.client.connection_pool
        self._waiter = redis.Redis(
            connection_pool=type(pool)(connection_class=pool.connection_class, **pool.connection_kwargs)
        )

    def stop(self) -> None:
        self._stopping.set()
        self._waiter.connection_pool.disconnect()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(5)
        self._waiter.close()

    def run(self) -> None:
        next_beat = 0.0
        #: When the next delayed message is due (monotonic ms), or None.
        next_due: float | None = None
        woken = False
        #: Since when (monotonic ms) Redis has answered without a failure.
        connected_since: float | None = None
        beats = 0
        while not self._stopping.is_set():
            try:
                now = time.monotonic() * 1000
                if now >= next_beat or woken or (next_due is not None and now >= next_due):
                    if now >= next_beat:
                        self.broker.heartbeat()
                        if connected_since is None:
                            connected_since = now
                        elif now - connected_since >= self.interval_ms:
                            self.broker.sweep()
                        self.broker.release_closed_inflight()
                        release_unreleased()
                        if beats % MAINTENANCE_EVERY == 0:
                            self.broker.trim_dead_letters()
                            self.broker.adopt_celery_side_lists()
                        beats += 1
                        next_beat = now + self.interval_ms
                    # At every beat too: a wake-up taken by a process that
                    # died is seen here within one interval.
                    wait_ms = self.broker.promote_due()
                    now = time.monotonic() * 1000
                    next_due = None if wait_ms < 0 else now + wait_ms
                wake_at = next_beat if next_due is None else min(next_beat, next_due)
                wait_s = min(MAX_WAIT_S, (wake_at - now) / 1000)
                woken = False
                if wait_s >= 0.001 and not self._stopping.is_set():
                    woken = self._waiter.blpop([keys.wake_key()], timeout=wait_s) is not None
            except redis.RedisError as e:
                if self._stopping.is_set():
                    break
                connected_since, next_beat = None, 0.0
                self.logger.warning("Upkeep could not reach Redis (%s); trying again.", e)
                self._stopping.wait(self.backoff_s)
            except Exception:
                if self._stopping.is_set():
                    break
                connected_since, next_beat = None, 0.0
                self.logger.critical("Unexpected failure in the upkeep thread.", exc_info=True)
                self._stopping.wait(self.backoff_s)
