"""Tells a prefork child's supervisor which message it runs, and until when.

The supervisor needs this to replace a child whose task is stuck past
its hard time limit (even when the child's own threads cannot run) and
to fail that message by the retry policy afterwards (:mod:`actors.abandoned`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq import Middleware

from actors.middleware.time_limits import TimeLimits

__all__ = ["ParentLink"]


class ParentLink(Middleware):
    """Parameters:
      send: sends one event (a tuple) to the supervisor; thread-safe here.
      time_limits: the broker's time limits, to compute the hard limit.
    """

    def __init__(self, send: Callable[[tuple[Any, ...]], None], time_limits: TimeLimits) -> None:
        self._send = send
        self._lock = threading.Lock()
        self.time_limits = time_limits

    def send(self, *event: Any) -> None:
        with self._lock:
            self._send(event)

    def before_process_message(self, broker, message):
        _soft, hard_ms = self.time_limits.limits_ms(broker, message)
        self.send("start", {
            "id": message.message_id, "name": message.actor_name, "queue": message.queue_name,
            "inflight_key": getattr(message, "inflight_key", None), "raw": getattr(message, "raw", None),
            "hard_ms": hard_ms, "monotonic": time.monotonic(),
        })

    def after_process_message(self, broker, message, *, result=None, exception=None):
        # The task's code has returned: nothing left to kill it for.  The
        # message stays the child's current one until its ack or nack (the
        # retry policy decides in between), so a child dying before then
        # has it failed by the retry policy, not put back as if unstarted.
        self.send("done", message.message_id)

    after_skip_message = after_process_message

    def after_ack(self, broker, message):
        self.send("end", message.message_id)

    after_nack = after_ack
