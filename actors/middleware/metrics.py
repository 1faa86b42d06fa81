"""Prometheus metrics of the tasks a worker process runs.

Counters per task (the runbook's names, ``process_message_task``):
received, succeeded, failed (dead-lettered or raised for good), retried;
a duration histogram; the tasks in progress (a ``livesum`` gauge: the
node's live processes summed); soft and hard time-limit hits; and, in a
prefork node's main process, the children it replaced and why.

Metrics are recorded only once :meth:`TaskMetrics.enable` named the
node's metrics directory (:mod:`actors.worker_metrics`): the web app, the
CLI and tests that build the same broker record nothing.  Under the
plain ``dramatiq`` CLI each worker process enables itself at boot, and
the middleware's ``forks`` has the CLI start the process that serves
the port.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from dramatiq import Middleware

from actors.middleware.task_log import begin, elapsed_s

__all__ = ["TaskMetrics", "DURATION_BUCKETS_S", "OUTCOMES", "RESTART_REASONS"]

logger = logging.getLogger(__name__)

#: Bounds of the duration histogram, in seconds (the hard limit is 300 s).
DURATION_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 240.0, 300.0)

#: How a task run ends, as counted.
OUTCOMES = ("succeeded", "failed", "retried")

#: Why a prefork child was replaced.
RESTART_REASONS = ("max_tasks", "max_memory", "time_limit", "crashed")


class _Metrics:
    """The metric objects of one process (created after the directory is set)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, doc: str, labels: tuple[str, ...] = ("task",)) -> Any:
            # registry=None: the node's exposition reads the files, not a registry.
            return Counter(name, doc, labels, registry=None)

        self.received = counter("assistant_tasks_received", "Tasks a worker process started.")
        self.succeeded = counter("assistant_tasks_succeeded", "Tasks that returned.")
        self.failed = counter("assistant_tasks_failed", "Tasks that failed for good (dead-letter set).")
        self.retried = counter("assistant_tasks_retried", "Task runs that failed and were scheduled again.")
        self.duration = Histogram("assistant_task_duration_seconds", "How long task runs took.", ("task",),
                                  buckets=DURATION_BUCKETS_S, registry=None)
        self.in_progress = Gauge("assistant_tasks_in_progress", "Tasks running now.", ("task",),
                                 multiprocess_mode="livesum", registry=None)
        self.limit_hits = counter("assistant_task_time_limit_hits", "Time limits that fired, soft or hard.",
                                  ("task", "limit"))
        self.child_restarts = counter("assistant_worker_child_restarts",
                                      "Prefork children replaced, by reason.", ("reason",))
        self._tasks: dict[str, _TaskChildren] = {}

    def of(self, task: str) -> _TaskChildren:
        """The labelled children of ``task``, made once (``labels()`` locks and builds a key on every call)."""
        children = self._tasks.get(task)
        if children is None:
            children = self._tasks[task] = _TaskChildren(self, task)
        return children


class _TaskChildren:
    """One task's labelled metrics: the hot path touches these only."""

    __slots__ = ("received", "in_progress", "duration", "succeeded", "failed", "retried")

    def __init__(self, metrics: _Metrics, task: str) -> None:
        self.received = metrics.received.labels(task)
        self.in_progress = metrics.in_progress.labels(task)
        self.duration = metrics.duration.labels(task)
        self.succeeded = metrics.succeeded.labels(task)
        self.failed = metrics.failed.labels(task)
        self.retried = metrics.retried.labels(task)


class TaskMetrics(Middleware):
    """Parameters:
      port: WORKER_METRICS_PORT; 0 turns the metrics off (no ``forks`` either).
      config: the process's config (the plain CLI's directory is derived from it).
    """

    def __init__(self, *, port: int, config: Any = None) -> None:
        self.port = port
        self.config = config
        self.path: str | None = None
        self._metrics: _Metrics | None = None
        self._lock = threading.Lock()
        self._plain_cli = False
        #: Under the plain CLI, until its exposition said whether it serves: the directory to look in.
        self._awaiting: str | None = None

    @property
    def forks(self):
        if not self.port:
            return []
        from actors.worker_metrics import plain_cli_exposition

        return [plain_cli_exposition]

    @property
    def enabled(self) -> bool:
        return self._metrics is not None

    def enable(self, path: str) -> None:
        """Record into ``path`` (the node's directory, already in ``PROMETHEUS_MULTIPROC_DIR``)."""
        with self._lock:
            if self._metrics is None:
                self.path = str(path)
                self._metrics = _Metrics()

    # -- hooks ---------------------------------------------------------------------

    def after_process_boot(self, broker):
        # Emitted in each worker process of the plain dramatiq CLI only.
        self._plain_cli = True
        if not self.port or self.config is None:
            return
        from actors.worker_metrics import claim_plain_cli_dir

        try:
            self.enable(str(claim_plain_cli_dir(self.config, os.getppid())))
        except OSError as e:
            logger.error("Cannot use the worker metrics directory: %s. This process records no metrics.", e)
            return
        self._awaiting = self.path

    def _check_served(self, path: str) -> None:
        """Stop recording when the invocation's exposition could not bind its port (it logged why)."""
        from actors.worker_metrics import SERVED, UNSERVED

        if os.path.exists(os.path.join(path, UNSERVED)):
            self._metrics = None
            self._awaiting = None
            logger.debug("Nobody serves this run's metrics: this process stops recording them.")
        elif os.path.exists(os.path.join(path, SERVED)):
            self._awaiting = None

    def after_worker_shutdown(self, broker, worker):
        if self._plain_cli and self.path is not None:
            from actors.worker_metrics import mark_process_dead

            mark_process_dead(self.path, os.getpid())

    def before_process_message(self, broker, message):
        if self._awaiting is not None:
            self._check_served(self._awaiting)
        metrics = self._metrics
        if metrics is None:
            return
        children = metrics.of(message.actor_name)
        begin(message)
        # Marks the run as counted: its end is counted only then.
        message.task_metrics = children
        children.received.inc()
        children.in_progress.inc()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        children = self._counted(message)
        if children is None:
            return
        children.in_progress.dec()
        duration = elapsed_s(message)
        if duration is not None:
            children.duration.observe(duration)
        if getattr(message, "abandoned", False):
            return  # counted by fail_held when its process gave up on it
        if exception is None:
            children.succeeded.inc()
        elif message.failed:
            children.failed.inc()
        else:
            children.retried.inc()

    def after_skip_message(self, broker, message):
        children = self._counted(message)
        if children is not None:
            children.in_progress.dec()

    @staticmethod
    def _counted(message) -> _TaskChildren | None:
        children = getattr(message, "task_metrics", None)
        if children is not None:
            message.task_metrics = None  # counted once, whatever calls follow
        return children

    # -- counted from elsewhere ---------------------------------------------------------

    def count_outcome(self, task: str, outcome: str) -> None:
        """Count how a run of ``task`` ended (``succeeded``, ``failed`` or ``retried``)."""
        metrics = self._metrics
        if metrics is None or outcome not in OUTCOMES:
            return
        getattr(metrics.of(task), outcome).inc()

    def count_limit_hit(self, task: str, limit: str) -> None:
        """A ``soft`` or ``hard`` time limit fired for ``task`` (from :class:`TimeLimits`)."""
        if self._metrics is not None:
            self._metrics.limit_hits.labels(task, limit).inc()

    def count_child_restart(self, reason: str) -> None:
        """The prefork supervisor replaced a child (one of :data:`RESTART_REASONS`)."""
        if self._metrics is not None:
            self._metrics.child_restarts.labels(reason).inc()
