"""The prefork pool: N child processes of one thread each, replaced one at a time.

Each child is a :class:`actors.node_process.NodeProcess` started with
``multiprocessing``'s *spawn* (a fresh interpreter, no fork), named
``ForkPoolWorker-N`` with N counting up as children are replaced, as in
Celery.  The supervisor (the node's main process) runs no task; it

- beats the node's ``info`` into the registry while at least one child
  is ready, and is alone in keeping the node alive there (the children
  write their own state only); says ``NODE ready.`` when the first
  child is ready;
- refreshes the broker heartbeat of every live child, so that a child
  whose task holds the GIL (and cannot beat itself) is not swept;
- replaces only the child that exited: a child that retired after
  ``--max-tasks-per-child``/``--max-memory-per-child`` at once, a
  crashed one after a back-off that grows while it keeps crashing;
- kills (SIGKILL) a child whose task is still running a grace after its
  hard time limit, fails that message by the retry policy
  (:mod:`actors.abandoned`) and starts another child;
- gives back at once whatever a dead child still held and frees the
  conversation locks its task held (no wait for the broker's sweep, nor
  for the locks' TTL);
- on SIGTERM/SIGINT asks every child (over its pipe) to stop warmly
  and waits for them; a second signal kills them (cold shutdown), their
  messages going back to their queues.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from actors import early_signals, registry, sd_notify
from actors.abandoned import WorkerLostError, fail_held, hard_limit_error
from actors.envelope import UndecodableMessage, decode
from actors.middleware import TaskMetrics
from actors.middleware import find as find_middleware
from actors.middleware.node_state import rusage
from actors.middleware.task_log import log_finished
from actors.node_process import EX_COLD, child_main, load_broker
from actors.worker_logging import say_shutdown
from actors.worker_spec import WorkerSpec
from facade.api import ms_to_seconds

__all__ = ["Supervisor"]

logger = logging.getLogger("celery.worker")

#: A child that dies sooner than this after starting is crash-looping.
QUICK_EXIT_S = 10.0
#: Longest wait before starting a crash-looping child again, in seconds.
MAX_BACKOFF_S = 30.0
#: How long the supervisor waits for events at most, in seconds.
_TICK_S = 0.25
#: Extra seconds children get beyond the shutdown timeout before they are killed.
_SHUTDOWN_SLACK_S = 15.0


@dataclass
class _Child:
    slot: int
    number: int
    process: Any
    conn: Any
    started: float
    broker_id: str | None = None
    ready: bool = False
    #: The task running now (the child's "start" event) and its kill deadline (monotonic).
    current: dict[str, Any] | None = None
    deadline: float | None = None
    #: When the supervisor heard of the current task's start (monotonic).
    current_since: float | None = None
    retiring: str | None = None
    #: ``max_tasks`` or ``max_memory``: the metrics' label of a retiring child.
    retire_kind: str = ""
    killed_stuck: bool = False
    events: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"ForkPoolWorker-{self.number}"


class Supervisor:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.broker = load_broker(spec.extra_modules)
        self.client: redis.Redis = self.broker.client
        self.ctx = multiprocessing.get_context("spawn")
        self.children: dict[int, _Child] = {}
        self._numbers = 0
        self._failures: dict[int, int] = {}
        self._restart_at: dict[int, float] = {}
        self._signals = 0
        self._announced = False
        self._info = spec.info()
        self._stop_beat = threading.Event()
        self._refresh_failing = False
        self.metrics: TaskMetrics = find_middleware(self.broker, TaskMetrics)
        if spec.metrics_dir is not None:
            # Counts the children it replaces, and the tasks of children that died.
            self.metrics.enable(spec.metrics_dir)

    # -- running ---------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        beat = threading.Thread(target=self._beat, name="node-registry", daemon=True)
        beat.start()
        for slot in range(1, self.spec.concurrency + 1):
            self._start(slot)
        warm_deadline: float | None = None
        try:
            while True:
                if self._signals >= 2:
                    return self._cold()
                if self._signals == 1 and warm_deadline is None:
                    warm_deadline = time.monotonic() + self.spec.shutdown_timeout_s + _SHUTDOWN_SLACK_S
                    self._restart_at.clear()
                    for child in self.children.values():
                        self._tell_stop(child)
                if warm_deadline is not None:
                    if not self.children:
                        return 0
                    if time.monotonic() > warm_deadline:
                        logger.error("Children still running after the shutdown timeout: killing them.")
                        self._signals = 2
                        continue
                self._tick()
        finally:
            self._stop_beat.set()
            beat.join(5)
            try:
                registry.leave(self.client, self.spec.node_name)
            except redis.RedisError:
                logger.warning("Could not leave the node registry; the entry expires.")

    def _tick(self) -> None:
        waitables: list[Any] = []
        for child in self.children.values():
            waitables += [child.conn, child.process.sentinel]
        timeout = _TICK_S
        if waitables:
            multiprocessing.connection.wait(waitables, timeout)
        else:
            time.sleep(timeout)
        for child in list(self.children.values()):
            self._read(child)
            if not child.process.is_alive():
                child.process.join()
                self._reap(child)
        self._refresh_heartbeats()
        now = time.monotonic()
        for child in self.children.values():
            if child.deadline is not None and now >= child.deadline and not child.killed_stuck:
                self._kill_stuck(child)
        for slot, when in list(self._restart_at.items()):
            if now >= when and self._signals == 0:
                del self._restart_at[slot]
                self._start(slot)
        if not self._announced and self._serving():
            self._announce()

    def _announce(self) -> None:
        """Say ``NODE ready.`` once, as soon as one child serves.

        Not when all of them do: a child that keeps failing at start held
        the line back while the others served (for good when each attempt
        took longer than ``QUICK_EXIT_S`` to fail and was restarted at
        once), and whatever waited for it hung.  The node is in the registry
        from the same moment (it beats here first), so ``celery status``
        agrees with the line.
        """
        self._announced = True
        self._beat_once()
        logger.info("Connected to %s", self.spec.broker_shown)
        logger.info("%s ready.", self.spec.node_name)
        sd_notify.notify(self.spec.notify_socket, "READY=1", f"STATUS={self.spec.node_name} ready.")

    # -- children --------------------------------------------------------------

    def _start(self, slot: int) -> None:
        self._numbers += 1
        number = self._numbers
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(target=child_main, args=(self.spec, number, child_end),
                                   name=f"ForkPoolWorker-{number}", daemon=False)
        process.start()
        child_end.close()
        self.children[slot] = _Child(slot=slot, number=number, process=process, conn=parent_end,
                                     started=time.monotonic())

    def _tell_stop(self, child: _Child) -> None:
        try:
            child.conn.send("stop")
        except OSError:
            pass  # already gone: reaped on the next tick

    def _read(self, child: _Child) -> None:
        try:
            while child.conn.poll():
                self._handle(child, child.conn.recv())
        except (EOFError, OSError):
            pass

    def _handle(self, child: _Child, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "broker":
            child.broker_id = event[1]
        elif kind == "ready":
            child.ready = True
        elif kind == "start":
            task = event[1]
            child.current, child.current_since = task, time.monotonic()
            # A backstop: the child reports a stuck task itself one grace
            # after the hard limit, unless it cannot run Python at all.
            child.deadline = time.monotonic() + ms_to_seconds(task["hard_ms"]) + 2 * self.spec.grace_s
        elif kind == "done":
            if child.current is not None and child.current["id"] == event[1]:
                child.deadline = None
        elif kind == "end":
            if child.current is not None and child.current["id"] == event[1]:
                child.current, child.deadline = None, None
        elif kind == "stuck":
            if child.current is not None and child.current["id"] == event[1]:
                child.deadline = time.monotonic()
        elif kind == "retire":
            child.retiring = event[1]
            child.retire_kind = event[2] if len(event) > 2 else "max_tasks"

    def _refresh_heartbeats(self) -> None:
        """Beat for every live child, so that a live child is never swept.

        A task holding the GIL (a long regex, a C extension that does not
        release it) keeps its child's upkeep thread from beating; the
        broker's sweep would then give its message to another child while
        it still runs.  The hard limit and :func:`actors.abandoned.fail_held`
        decide about such a task, not the sweep.
        """
        ids = [c.broker_id for c in self.children.values() if c.broker_id is not None and c.process.is_alive()]
        try:
            self.broker.refresh_heartbeats(ids)
        except redis.RedisError as e:
            if not self._refresh_failing:
                logger.warning("Could not refresh the children's heartbeats: %s", e)
            self._refresh_failing = True
        else:
            self._refresh_failing = False

    def _kill_stuck(self, child: _Child) -> None:
        child.killed_stuck = True
        child.process.kill()

    def _reap(self, child: _Child) -> None:
        del self.children[child.slot]
        code = child.process.exitcode
        how = _exit_text(code)
        planned = child.retiring is not None and code == 0
        if planned:
            logger.info("Process '%s' pid:%s exited with '%s' (%s)", child.name, child.process.pid, how,
                        child.retiring)
        elif self._signals == 0 or code not in (0, None):
            logger.error("Process '%s' pid:%s exited with '%s'", child.name, child.process.pid, how)
        self._clean_up(child)
        if self._signals:
            return
        if planned:
            self.metrics.count_child_restart(child.retire_kind)
        else:
            self.metrics.count_child_restart("time_limit" if child.killed_stuck else "crashed")
        if planned or child.killed_stuck:
            self._failures.pop(child.slot, None)
            self._start(child.slot)
            return
        lived = time.monotonic() - child.started
        failures = self._failures.get(child.slot, 0) + 1 if lived < QUICK_EXIT_S else 1
        self._failures[child.slot] = failures
        delay = 0.0 if failures == 1 else min(MAX_BACKOFF_S, 2.0 ** (failures - 2))
        if delay:
            logger.warning("Child %d keeps failing (%d times in a row): starting it again in %gs.",
                           child.slot, failures, delay)
        self._restart_at[child.slot] = time.monotonic() + delay

    def _clean_up(self, child: _Child) -> None:
        """Fail the message a child died running by the retry policy; give back the rest it held
        and free its conversation locks (``release_process``), so the retry finds its
        conversation free.

        On a shutdown the running message goes back to its queue instead:
        its task did not fail, the node stopped.
        """
        try:
            task = child.current
            if task is not None and task.get("raw") is not None and (child.killed_stuck or not self._signals):
                # Read as when the task began: an old deployment's message whose "expires" passed while it
                # ran (up to its time limit) was refused here, and the exception ended the whole node.
                since = child.current_since
                began_ms = None if since is None else int((time.time() - (time.monotonic() - since)) * 1000)
                message = decode(task["raw"], task["queue"], now_ms=began_ms).message
                error: BaseException = hard_limit_error(task["hard_ms"]) if child.killed_stuck else \
                    WorkerLostError(f"Worker exited prematurely: {_exit_text(child.process.exitcode)}")
                outcome = fail_held(self.broker, inflight_key=task["inflight_key"], raw=task["raw"],
                                    message=message, exception=error)
                # The run's finish line: the child that began it cannot write it.
                log_finished(message, outcome, None if since is None else time.monotonic() - since)
            if child.broker_id is not None:
                self.broker.release_process(child.broker_id)
            registry.leave(self.client, self.spec.node_name, pid=child.process.pid)
        except (redis.RedisError, UndecodableMessage):
            # (a message can still expire between its fetch and its start: the sweep gives it back to its
            # queue, where it is dead-lettered as expired)
            logger.error("Could not clean up after %s; the broker's sweep gives its messages back.", child.name,
                         exc_info=True)
        finally:
            child.conn.close()
            # Its in-progress share leaves the live gauges; its counts move to the node's archive files.
            if self.metrics.path is not None:
                from actors.worker_metrics import fold_dead_process

                fold_dead_process(self.metrics.path, child.process.pid)

    def _cold(self) -> int:
        for child in self.children.values():
            child.process.kill()
        for child in list(self.children.values()):
            child.process.join()
            self._read(child)
            del self.children[child.slot]
            self._clean_up(child)
        return EX_COLD

    # -- signals and registry -----------------------------------------------------

    def _install_signals(self) -> None:
        for name in early_signals.NAMES:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self._on_signal)
        early_signals.replay(self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._signals += 1
        how = "Warm" if self._signals == 1 else "Cold"
        say_shutdown(how)
        if self._signals == 1:
            sd_notify.notify(self.spec.notify_socket, "STOPPING=1", "STATUS=Warm shutdown: running tasks finish.")

    def _serving(self) -> bool:
        """Whether at least one child is up and taking messages (busy or not)."""
        return any(c.ready and c.process.is_alive() for c in list(self.children.values()))

    def _beat(self) -> None:
        """Beat the node while at least one child serves: a node whose children all
        crash-loop is not counted by ``status``, ``inspect`` and ``/health``.

        This is the node's only heartbeat: its children write their own
        state but never keep the node alive, so a supervisor killed outright
        takes its node out of the registry within ``MISSED_BEATS`` intervals
        even while orphaned children finish their tasks.
        """
        while True:
            self._beat_once()
            if self._stop_beat.wait(registry.INTERVAL_S):
                return

    def _beat_once(self) -> None:
        if not self._serving():
            return
        try:
            registry.beat(self.client, self.spec.node_name, info={**self._info, "rusage": rusage()})
        except redis.RedisError as e:
            logger.warning("Could not beat into the node registry: %s", e)


def _exit_text(code: int | None) -> str:
    """Celery's words for how a child ended: ``signal 9 (SIGKILL)`` or ``exitcode 1``."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        return f"signal {-code} ({name})"
    return f"exitcode {code}"
