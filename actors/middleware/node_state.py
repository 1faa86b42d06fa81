"""What this worker process runs and has run, beaten into the node registry.

Every worker process keeps its running tasks (``active``), the messages
it holds but has not started (``reserved``) and its counters, and a beat
thread writes them to :mod:`actors.registry` every ``INTERVAL_S``.  The
node's main process also writes the node's ``info`` and alone keeps the
node alive: under ``celery worker`` that is the supervisor (prefork) or
the process itself (solo, threads), which name the node with
:meth:`NodeState.join`; under the plain ``dramatiq`` CLI every worker
process names it ``dramatiq.<main pid>@<host>`` and writes a minimal
``info``, so that one invocation counts as one node.  A Worker started
by a program or a test (no ``join``, no ``dramatiq`` CLI) is not a node.

It also writes the structured line when a task starts and the one when
it ends (:func:`actors.middleware.task_log.log_finished`: ``task=… id=…
queue=… duration_s=… outcome=…``), after the retry decision, which is
why it sits before ``FixedRetries`` in the list.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from typing import Any

import redis
from dramatiq import Middleware
from dramatiq.errors import ActorNotFound

from actors import keys, registry
from actors.middleware.task_log import begin, elapsed_s, log_finished, log_started
from actors.names import celery_name
from facade.api import from_dramatiq_priority

__all__ = ["NodeState", "task_dict", "rss_kib", "rusage"]

def rss_kib() -> int:
    """This process's resident memory in KiB (0 when unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except (ImportError, OSError):
        return 0


#: The fields of Celery's ``inspect stats`` ``rusage`` block, as ``getrusage`` names them (``ru_`` dropped).
RUSAGE_FIELDS = ("utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap", "inblock",
                 "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")


def rusage() -> dict[str, float] | None:
    """This process's ``getrusage(RUSAGE_SELF)`` as Celery's ``inspect stats`` shows it
    (None where the platform has no ``resource`` module: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {name: getattr(usage, f"ru_{name}") for name in RUSAGE_FIELDS}


def task_dict(message, *, hostname: str, started: float | None, pid: int | None,
              broker: Any = None) -> dict[str, Any]:
    """A message in the shape of Celery's ``inspect active``/``reserved`` entries.

    The priority is the message's own, else its actor's (with ``broker``),
    on the runbook's scale.
    """
    priority = message.options.get("priority")
    if priority is None and broker is not None:
        try:
            priority = broker.get_actor(message.actor_name).priority
        except ActorNotFound:
            pass
    return {
        "id": message.message_id,
        "name": celery_name(message.actor_name),
        "args": list(message.args),
        "kwargs": dict(message.kwargs),
        "type": celery_name(message.actor_name),
        "hostname": hostname,
        "time_start": started,
        "acknowledged": started is not None,
        "delivery_info": {
            "exchange": "",
            "routing_key": keys.queue_key(message.queue_name),
            "priority": None if priority is None else from_dramatiq_priority(int(priority)),
            "redelivered": bool(message.options.get("retries")),
        },
        "worker_pid": pid,
    }


class NodeState(Middleware):
    """Tracks this process's tasks and beats them into the node registry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, tuple[Any, float]] = {}  # id -> (message, epoch s)
        self._counters: Counter[str] = Counter()
        self._by_task: Counter[str] = Counter()
        self._worker: Any = None
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()
        self._client: redis.Redis | None = None
        self._plain_cli = False
        #: The node's name, once this process is part of a node.
        self.node_name: str | None = None
        #: The node's info, when this process writes it.
        self.info: dict[str, Any] | None = None
        #: Child number (0 for a main process).
        self.index = 0
        #: Whether leaving removes the whole node (the node's only process).
        self.owns_node = False
        self.interval_s = registry.INTERVAL_S

    def join(self, node_name: str, *, info: dict[str, Any] | None, index: int, owns_node: bool) -> None:
        """Make this process part of ``node_name`` (before the Worker starts)."""
        self.node_name, self.info, self.index, self.owns_node = node_name, info, index, owns_node

    # -- hooks ---------------------------------------------------------------

    def after_process_boot(self, broker):
        # Emitted by the plain dramatiq CLI in each of its worker processes.
        self._plain_cli = True

    def after_worker_boot(self, broker, worker):
        self._worker = worker
        if self.node_name is None:
            if not self._plain_cli:
                return
            main_pid = os.getppid()
            self.node_name = f"dramatiq.{main_pid}@{socket.gethostname()}"
            self.info = {
                "name": self.node_name, "hostname": socket.gethostname(), "pid": main_pid, "pool": "prefork",
                "concurrency": worker.worker_threads, "queues": sorted(worker.consumer_whitelist or broker.queues),
                "started_at": time.time(), "sw_ident": "dramatiq", "sw_ver": _dramatiq_version(),
                "max_tasks_per_child": None, "max_memory_per_child": None, "time_limit": None,
                "soft_time_limit": None, "prefetch_count": worker.queue_prefetch, "broker": None,
            }
        self._client = broker.client
        self._stop.clear()
        self._beat = threading.Thread(target=self._run_beat, name="node-registry", daemon=True)
        self._beat.start()

    def after_worker_shutdown(self, broker, worker):
        self._stop.set()
        if self._beat is not None:
            self._beat.join(5)
            self._beat = None
        if self.node_name is None or self._client is None:
            return
        try:
            self.leave(self._client)
        except redis.RedisError:
            logging.getLogger(__name__).warning("Could not leave the node registry; the entry expires.")

    def before_process_message(self, broker, message):
        begin(message)
        with self._lock:
            self._active[message.message_id] = (message, time.time())
        log_started(message)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if getattr(message, "abandoned", False):
            return  # finished when its process gave up on it
        if exception is None:
            outcome = "succeeded"
        elif message.failed:
            outcome = "failed"
        else:
            outcome = "retried"
        self.finish(message, outcome)

    def after_skip_message(self, broker, message):
        self.finish(message, "skipped")

    # -- state -----------------------------------------------------------------

    def finish(self, message, outcome: str) -> None:
        """Count a task that ended (also called for an abandoned one)."""
        with self._lock:
            self._active.pop(message.message_id, None)
            self._counters["processed"] += 1
            self._counters[outcome] += 1
            self._by_task[celery_name(message.actor_name)] += 1
        log_finished(message, outcome, elapsed_s(message))

    def snapshot(self) -> dict[str, Any]:
        """This process's state as the registry stores it."""
        pid, name = os.getpid(), self.node_name or ""
        broker = None if self._worker is None else self._worker.broker
        with self._lock:
            active = [task_dict(m, hostname=name, started=t, pid=pid, broker=broker)
                      for m, t in self._active.values()]
            counters = dict(self._counters)
            by_task = dict(self._by_task)
        reserved = [task_dict(m, hostname=name, started=None, pid=None, broker=broker) for m in self._reserved()]
        return {
            "pid": pid, "index": self.index, "active": active, "reserved": reserved,
            "processed": counters.get("processed", 0), "failed": counters.get("failed", 0),
            "retried": counters.get("retried", 0), "succeeded": counters.get("succeeded", 0),
            "by_task": by_task, "rss_kib": rss_kib(),
        }

    def _reserved(self) -> list[Any]:
        worker = self._worker
        if worker is None:
            return []
        work_queue = worker.work_queue
        with work_queue.mutex:
            items = list(work_queue.queue)
        return [item.message for item in sorted(items)]

    def beat_once(self, client: redis.Redis) -> None:
        """Write this process's state; keep the node alive only if this process stands for it.

        The process that writes the node's ``info`` stands for the node (a
        solo or threads main process; each process of the plain ``dramatiq``
        CLI, whose main process runs no middleware).  A prefork child does
        not: if its supervisor is killed outright, the child finishes its
        running task before it stops, and its beats must not keep a node
        that no longer exists online meanwhile.
        """
        assert self.node_name is not None
        if self.info is None:
            registry.beat_process(client, self.node_name, os.getpid(), self.snapshot(), interval_s=self.interval_s)
            return
        registry.beat(client, self.node_name, info={**self.info, "rusage": rusage()},
                      processes={os.getpid(): self.snapshot()}, interval_s=self.interval_s)

    def leave(self, client: redis.Redis) -> None:
        """Take this process (and, for the node's only process, the node) out of the registry."""
        assert self.node_name is not None
        if self.owns_node:
            registry.leave(client, self.node_name)
            return
        registry.leave(client, self.node_name, pid=os.getpid())
        if self._plain_cli:
            raw_fields = client.hkeys(registry.node_key(self.node_name))
            fields = [f.decode() if isinstance(f, bytes) else f for f in raw_fields]
            if not any(f.startswith("proc:") for f in fields):
                registry.leave(client, self.node_name)

    def _run_beat(self) -> None:
        assert self._client is not None
        failing = False
        while True:
            try:
                self.beat_once(self._client)
                failing = False
            except redis.RedisError as e:
                if not failing:
                    logging.getLogger(__name__).warning("Could not beat into the node registry: %s", e)
                failing = True
            except Exception:
                logging.getLogger(__name__).critical("Unexpected failure of the registry beat.", exc_info=True)
            if self._stop.wait(self.interval_s):
                return


def _dramatiq_version() -> str:
    import dramatiq

    return dramatiq.__version__
