"""Retire a worker process after N tasks or above a memory size, after its current task.

``--max-tasks-per-child`` and ``--max-memory-per-child`` (KiB) of
``celery worker``: once the task that reached a limit is acknowledged,
the worker thread that ran it pauses (it takes no further message) and
:attr:`ChildLimits.reached` is set; the process's runner then stops its
Worker (prefetched messages go back to their queue) and exits, and the
supervisor starts a replacement.  Other processes are not touched.
"""

from __future__ import annotations

import logging
import threading

from dramatiq import Middleware
from dramatiq.worker import WorkerThread

from actors.middleware.node_state import rss_kib

__all__ = ["ChildLimits"]

logger = logging.getLogger(__name__)


class ChildLimits(Middleware):
    """Parameters:
      max_tasks: tasks after which the process retires, or None.
      max_memory_kib: resident size above which it retires after a task, or None.
    """

    def __init__(self, *, max_tasks: int | None, max_memory_kib: int | None) -> None:
        self.max_tasks = max_tasks
        self.max_memory_kib = max_memory_kib
        self.done = 0
        self._lock = threading.Lock()
        #: Set once a limit is reached; :attr:`reason` says which.
        self.reached = threading.Event()
        self.reason = ""
        #: ``max_tasks`` or ``max_memory`` once reached (the metrics' label).
        self.kind = ""

    def after_ack(self, broker, message):
        self._count()

    def after_nack(self, broker, message):
        self._count()

    def _count(self) -> None:
        with self._lock:
            self.done += 1
            reason = kind = ""
            if self.max_tasks is not None and self.done >= self.max_tasks:
                reason, kind = f"max tasks per child reached ({self.done})", "max_tasks"
            elif self.max_memory_kib is not None:
                rss = rss_kib()
                if rss > self.max_memory_kib:
                    reason = f"max memory per child exceeded ({rss} KiB > {self.max_memory_kib} KiB)"
                    kind = "max_memory"
            if not reason or self.reached.is_set():
                return
            thread = threading.current_thread()
            if isinstance(thread, WorkerThread):
                # Checked by the thread before it takes its next message.
                thread.pause()
            self.reason, self.kind = reason, kind
            self.reached.set()
        logger.info("Retiring this process: %s.", reason)
