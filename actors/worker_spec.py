"""What one worker node is asked to be: the options of ``celery worker``, resolved."""

from __future__ import annotations

import dataclasses
from typing import Any

from actors.middleware.time_limits import HARD_LIMIT_GRACE_S

__all__ = ["WorkerSpec", "POOLS", "shutdown_timeout_s", "SHUTDOWN_MARGIN_S"]

#: The pools this project runs: one process and one thread, processes of
#: one thread each, or one process of several threads.
POOLS = ("solo", "prefork", "threads")


#: Seconds beyond the hard limit and its grace that running tasks get on a warm shutdown.
SHUTDOWN_MARGIN_S = 5.0


def shutdown_timeout_s(hard_limit_s: float, grace_s: float = HARD_LIMIT_GRACE_S) -> float:
    """How long a warm shutdown waits for running tasks: none runs longer than its hard
    limit plus the grace, so every running task can finish."""
    return hard_limit_s + grace_s + SHUTDOWN_MARGIN_S


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """Everything a node's processes need to know; picklable for prefork children."""

    #: The node's name (``worker1@host``).
    node_name: str
    #: The host the node runs on, as the banner shows it.
    hostname: str
    pool: str
    #: Child processes (prefork), threads (threads); shown for solo.
    concurrency: int
    #: Canonical queue names to consume (``default``, ``state``).
    queues: tuple[str, ...]
    #: Python logging level.
    loglevel: int
    #: Log file pattern (``%i``/``%I`` still to expand per process), or None for stderr.
    logfile: str | None = None
    #: ``text`` (Celery's lines) or ``json`` (one object a line).
    log_format: str = "text"
    #: The node's metrics directory, or None when the node serves no metrics.
    metrics_dir: str | None = None
    prefetch_multiplier: int = 4
    max_tasks_per_child: int | None = None
    max_memory_per_child_kib: int | None = None
    #: Node-wide limits that win over the actors' own, in seconds.
    time_limit_s: float | None = None
    soft_time_limit_s: float | None = None
    #: Seconds a task may stay blocked after its hard limit before its process is replaced.
    grace_s: float = HARD_LIMIT_GRACE_S
    #: Seconds running tasks get to finish on a warm shutdown.
    shutdown_timeout_s: float = 310.0
    task_events: bool = False
    #: Modules to import after the actors (tests, ops).
    extra_modules: tuple[str, ...] = ()
    #: The broker URL with its password masked.
    broker_shown: str = ""
    started_at: float = 0.0
    #: The node's main process.
    main_pid: int = 0
    #: systemd's notification socket, or None: the main process says READY=1 and STOPPING=1 there.
    notify_socket: str | None = None
    sw_ver: str = ""

    @property
    def threads_per_process(self) -> int:
        return self.concurrency if self.pool == "threads" else 1

    def info(self) -> dict[str, Any]:
        """The node's ``info`` in the registry (what ``status``/``inspect`` read)."""
        prefetch = self.prefetch_multiplier * (1 if self.pool == "solo" else self.concurrency)
        recycles = self.pool == "prefork"
        return {
            "name": self.node_name, "hostname": self.hostname, "pid": self.main_pid, "pool": self.pool,
            "concurrency": self.concurrency, "queues": list(self.queues), "started_at": self.started_at,
            "sw_ident": "whatsapp-assistant-tasks", "sw_ver": self.sw_ver,
            "max_tasks_per_child": self.max_tasks_per_child if recycles else None,
            "max_memory_per_child": self.max_memory_per_child_kib if recycles else None,
            "time_limit": self.time_limit_s, "soft_time_limit": self.soft_time_limit_s,
            "prefetch_count": prefetch, "broker": self.broker_shown,
        }
