"""One worker process of a node: a Dramatiq Worker on the project's broker.

Runs ``-P solo`` (one thread) and ``-P threads -c N`` (N threads) in the
node's main process, and each prefork child (one thread) under
:mod:`actors.supervisor`.  No fork and no POSIX-only signal here, so
solo and threads work on Windows.

Signals: the first SIGTERM/SIGINT stops taking messages and lets the
running tasks finish within the shutdown timeout; whatever is still
running then goes back to its queue.  A second one is a cold shutdown:
the process gives every message it holds back to its queue and exits
at once.  A prefork child ignores SIGINT (Ctrl-C reaches the whole
process group) and is told to stop by its supervisor over its pipe, so
a SIGTERM sent to the whole group is still a warm shutdown; it also
stops when that pipe breaks (the supervisor died).

A task stuck past its hard time limit (:class:`actors.middleware.time_limits.Stuck`):
a prefork child tells its supervisor, which kills and replaces it; a
main process fails the message by the retry policy itself
(:mod:`actors.abandoned`), stops the rest warmly and exits with
:data:`EX_REPLACE`, for its service manager to start it again
(``Restart=always``/``on-failure`` in systemd, a restart policy in Docker).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq import Worker

from actors import early_signals, hard_exit, sd_notify
from actors.abandoned import fail_held, hard_limit_error
from actors.middleware import ChildLimits, NodeState, ParentLink, TaskMetrics, TimeLimits
from actors.middleware import find as find_middleware
from actors.middleware.time_limits import Stuck
from actors.names import celery_name
from actors.worker_logging import say_shutdown
from actors.worker_spec import WorkerSpec
from app.errors import ConfigError
from app.redis_access import auth_failure
from facade.api import seconds_to_ms

__all__ = ["NodeProcess", "load_broker", "wait_for_redis", "EX_REPLACE", "EX_COLD"]

#: Exit code of a process that must be replaced (a task stuck in C code).
EX_REPLACE = 75
#: Exit code after a cold shutdown.
EX_COLD = 1

logger = logging.getLogger("celery.worker")

#: Longest pause between two attempts to reach Redis at start, in seconds.
MAX_CONNECT_WAIT_S = 32.0


def wait_for_redis(client, shown: str, give_up: Callable[[], bool] = lambda: False) -> bool:
    """Return True once Redis answers, saying so as Celery does meanwhile (a node started
    before Redis starts consuming when it comes, instead of claiming to be connected);
    False as soon as ``give_up()`` says so (a shutdown signal came while waiting).

    Raises:
      ConfigError: Redis refused the credentials of REDIS_URI (``shown``, masked):
        that does not go away by waiting.
    """
    import redis

    wait_s = 1.0
    while not give_up():
        try:
            client.ping()
            return True
        except redis.RedisError as e:
            refused = auth_failure(e, shown)
            if refused is not None:
                raise ConfigError(refused) from None
            logging.getLogger("celery.worker.consumer.consumer").error(
                "consumer: Cannot connect to %s: %s.\nTrying again in %.2f seconds...", shown, e, wait_s)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not give_up():
            time.sleep(0.1)
        wait_s = min(wait_s * 2, MAX_CONNECT_WAIT_S)
    return False


def load_broker(extra_modules: tuple[str, ...] = ()):
    """Import the actors (and extra modules), and return their broker.

    Extra modules are looked up in the working directory too, as Celery
    imports its app from there.
    """
    import actors

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())

    for module in (*actors.config.worker_extra_modules, *extra_modules):
        importlib.import_module(module)
    return actors.broker


def _quiet(send: Callable[[Any], None]) -> Callable[[Any], None]:
    """``send``, ignoring a broken pipe: a child outlives its supervisor only to stop."""

    def quiet(event: Any) -> None:
        try:
            send(event)
        except OSError:
            pass

    return quiet


class NodeProcess:
    """Parameters:
      spec: the node's options.
      index: 0 for the node's main process, N for ``ForkPoolWorker-N``.
      conn: a prefork child's duplex pipe to its supervisor, None in a main process.
    """

    def __init__(self, spec: WorkerSpec, *, index: int = 0, conn: Any = None) -> None:
        self.spec = spec
        self.index = index
        self.conn = conn
        self.is_main = conn is None
        send = None if conn is None else _quiet(conn.send)
        self.broker = load_broker(spec.extra_modules)
        self.time_limits: TimeLimits = find_middleware(self.broker, TimeLimits)
        self.node_state: NodeState = find_middleware(self.broker, NodeState)
        self.link = ParentLink(send, self.time_limits) if send is not None else None
        self.limits: ChildLimits | None = None
        self._wake = threading.Event()
        # A prefork child waits on its pipe and on this pair at once, so that
        # the supervisor's "stop" and its own signals both wake it at once.
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        if conn is not None:
            self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._stuck_threads: set[int] = set()
        self.exit_code = 0
        self.worker: Worker | None = None

    def configure(self) -> None:
        spec, broker = self.spec, self.broker
        if spec.time_limit_s is not None:
            self.time_limits.override_time_limit_ms = seconds_to_ms(spec.time_limit_s, name="--time-limit")
        if spec.soft_time_limit_s is not None:
            self.time_limits.override_soft_time_limit_ms = seconds_to_ms(spec.soft_time_limit_s,
                                                                         name="--soft-time-limit")
        self.time_limits.grace_s = spec.grace_s
        self.time_limits.on_stuck = self._on_stuck
        if self.link is not None:
            broker.add_middleware(self.link)
            if spec.max_tasks_per_child or spec.max_memory_per_child_kib:
                self.limits = ChildLimits(max_tasks=spec.max_tasks_per_child,
                                          max_memory_kib=spec.max_memory_per_child_kib)
                broker.add_middleware(self.limits)
        self.node_state.join(spec.node_name, info=spec.info() if self.is_main else None,
                             index=self.index, owns_node=self.is_main)
        if spec.metrics_dir is not None:
            find_middleware(broker, TaskMetrics).enable(spec.metrics_dir)

    def run(self) -> int:
        """Consume until told to stop; returns the process's exit code."""
        self.configure()
        self._install_signals()
        threads = self.spec.threads_per_process
        worker = self.worker = Worker(self.broker, queues=set(self.spec.queues), worker_threads=threads)
        worker.queue_prefetch = max(1, self.spec.prefetch_multiplier * threads)
        # Known to the supervisor before any consumer takes a message, so
        # that it can give back what this process holds if it dies.
        self._send("broker", self.broker.broker_id)
        worker.start()
        if self.is_main:
            logger.info("Connected to %s", self.spec.broker_shown)
            logger.info("%s ready.", self.spec.node_name)
            sd_notify.notify(self.spec.notify_socket, "READY=1", f"STATUS={self.spec.node_name} ready.")
        else:
            self._send("ready")
        while not self._stopping:
            if self.conn is not None and self._wake_r is not None:
                # Woken by the supervisor's "stop" at once: a warm shutdown takes no new task.
                multiprocessing.connection.wait([self.conn, self._wake_r], 0.5)
            else:
                self._wake.wait(0.5)
                self._wake.clear()
            if self.conn is not None and self._told_to_stop():
                self.request_stop()
            if self.limits is not None and self.limits.reached.is_set():
                self._send("retire", self.limits.reason, self.limits.kind)
                self._stopping = True
        self._shutdown(worker)
        return self.exit_code

    # -- stopping --------------------------------------------------------------

    def _told_to_stop(self) -> bool:
        try:
            return self.conn.poll() and self.conn.recv() == "stop"
        except (EOFError, OSError):
            # The supervisor is gone (killed outright): nobody would replace
            # this child or give back what it holds should it die, and the
            # node has left the registry.  Stop warmly: the running task ends.
            logger.warning("The supervisor is gone: taking no new task, stopping after the running one.")
            return True

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"!")
            except OSError:
                pass  # already woken

    def _shutdown(self, worker: Worker) -> None:
        worker.workers = [t for t in worker.workers if t.ident not in self._stuck_threads]
        for thread in worker.workers:
            thread.stop()  # no new task from here (worker.stop says so again)
        logger.debug("Taking no new task: stopping.")
        worker.stop(timeout=seconds_to_ms(self.spec.shutdown_timeout_s))
        still_running = any(t.is_alive() for t in worker.workers)
        if still_running:
            logger.warning("Tasks still running after the shutdown timeout (%ss): their messages go back "
                           "to their queue.", f"{self.spec.shutdown_timeout_s:g}")
            self.broker.release_process(self.broker.broker_id)
        self.broker.close()
        if still_running or self._stuck_threads:
            # Leave now (the pidfile goes first): the running tasks' messages and
            # conversation locks were given back, so they must not write another
            # line; and a thread blocked in C code cannot be joined.
            hard_exit.exit_now(self.exit_code)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        names = ("SIGTERM",) if not self.is_main else early_signals.NAMES
        for name in names:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self._on_signal)
        if not self.is_main:
            # Ctrl-C reaches the whole process group; the supervisor decides.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            early_signals.replay(self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if not self._stopping:
            if self.is_main:
                say_shutdown("Warm")
                sd_notify.notify(self.spec.notify_socket, "STOPPING=1", "STATUS=Warm shutdown: running tasks finish.")
            self.request_stop()
            return
        if self.is_main:
            say_shutdown("Cold")
        try:
            # Its consumers may still be blocked in a fetch that takes a message given back now.
            self.broker.release_process(self.broker.broker_id, still_fetching=True)
            self.node_state.leave(self.broker.client)
        finally:
            hard_exit.exit_now(EX_COLD)

    # -- stuck tasks ---------------------------------------------------------------

    def _on_stuck(self, stuck: Stuck) -> None:
        message = stuck.message
        if not self.is_main:
            # The supervisor kills this process and fails the message.
            self._send("stuck", message.message_id)
            return
        logger.error("Task %s[%s] is still blocked %ss after its hard time limit: its message follows the "
                     "retry policy and this process exits (code %d) to be replaced.",
                     celery_name(message.actor_name), message.message_id, f"{self.spec.grace_s:g}", EX_REPLACE)
        message.abandoned = True
        outcome = fail_held(self.broker, inflight_key=message.inflight_key, raw=message.raw,
                            message=message._message, exception=hard_limit_error(stuck.hard_ms))
        self.broker.inflight.mark_done(message.inflight_key, [message.raw])
        self.node_state.finish(message, outcome)
        self._stuck_threads.add(stuck.thread_id)
        self.exit_code = EX_REPLACE
        self.request_stop()

    def _send(self, *event: Any) -> None:
        if self.link is not None:
            self.link.send(*event)


def child_main(spec: WorkerSpec, index: int, conn) -> None:
    """Entry point of a prefork child (started by :mod:`actors.supervisor`)."""
    from actors.worker_logging import setup_logging

    setup_logging(spec.loglevel, spec.logfile, index=index, log_format=spec.log_format)
    process = NodeProcess(spec, index=index, conn=conn)
    sys.exit(process.run())
