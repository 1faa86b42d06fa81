"""Soft and hard time limits for tasks running in worker threads.

The soft limit raises :class:`facade.SoftTimeLimitExceeded` inside the
task, which may catch it and clean up; the hard limit raises
:class:`facade.TimeLimitExceeded`, which ``except Exception`` does not
catch.  Both are delivered the way Dramatiq's ``TimeLimit`` delivers its
exception (``PyThreadState_SetAsyncExc``), so a thread blocked in C code
(a socket read with no timeout) only sees them when it returns to
Python.  A task still inside the actor call :data:`HARD_LIMIT_GRACE_S`
after its hard limit is *stuck*: ``on_stuck`` is called with its message
(the ``celery worker`` runner fails the message by the retry policy and
replaces the process; see :mod:`actors.abandoned`).  Without ``on_stuck``
(the plain ``dramatiq`` CLI) a stuck task is only logged.
"""

from __future__ import annotations

import heapq
import logging
import sys
import threading
import time
from collections.abc import Callable

from dramatiq import Actor, Middleware
from dramatiq.middleware import raise_thread_exception

from actors.names import celery_name
from facade.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

__all__ = ["TimeLimits", "DEFAULT_TIME_LIMIT_MS", "DEFAULT_SOFT_TIME_LIMIT_MS", "HARD_LIMIT_GRACE_S", "Stuck"]

DEFAULT_TIME_LIMIT_MS = 300_000
DEFAULT_SOFT_TIME_LIMIT_MS = 240_000

logger = logging.getLogger("celery.worker.request")


#: How long to wait before looking again at a task whose deadline passed
#: while its thread was not inside the actor call, in seconds.
_RECHECK_S = 0.01

#: Looks at most this many times before dropping such a deadline.
_MAX_RECHECKS = 200

#: Longest sleep of the monitor with nothing to watch, in seconds.
_IDLE_WAIT_S = 5.0

#: Seconds a task may stay in the actor call after its hard limit's
#: exception was raised before it counts as stuck (blocked in C code).
HARD_LIMIT_GRACE_S = 3.0


class _Running:
    __slots__ = ("thread_id", "name", "task_id", "soft_ms", "hard_ms", "message", "started")

    def __init__(self, thread_id: int, name: str, task_id: str, soft_ms: int, hard_ms: int, message,
                 started: float) -> None:
        self.thread_id = thread_id
        #: ``time.monotonic()`` when the task started.
        self.started = started
        self.name = name
        self.task_id = task_id
        self.soft_ms = soft_ms
        self.hard_ms = hard_ms
        self.message = message


class Stuck:
    """A task that did not leave the actor call within the grace after its hard limit."""

    __slots__ = ("thread_id", "message", "hard_ms")

    def __init__(self, thread_id: int, message, hard_ms: int) -> None:
        self.thread_id = thread_id
        #: The message proxy the worker thread is processing.
        self.message = message
        self.hard_ms = hard_ms


def _inside_actor_call(thread_id: int) -> bool:
    """Whether the thread is running an actor's code right now."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        if frame.f_code is _ACTOR_CALL:
            return True
        frame = frame.f_back
    return False


_ACTOR_CALL = Actor.__call__.__code__


class TimeLimits(Middleware):
    """Enforce ``soft_time_limit`` and ``time_limit`` (milliseconds).

    A single monitor thread sleeps until the earliest deadline, so an
    idle worker pays nothing for it.

    An exception raised into a thread lands wherever that thread is, so
    two rules keep it inside the task: the monitor raises only while the
    thread is inside ``Actor.__call__``, and it does so holding the lock
    that ``after_process_message`` (the first ``after`` hook) needs to
    unregister the task.  The exception therefore lands in the task, or
    at the latest at that hook, both inside Dramatiq's handling of task
    failures.  The lock is a plain ``Lock``, whose ``with`` cannot be
    interrupted between acquiring and entering the block.

    Parameters:
      time_limit_ms, soft_time_limit_ms: defaults for actors that set none.
      override_time_limit_ms, override_soft_time_limit_ms: worker-wide
        values that win over the actors' own (``--time-limit`` on the CLI),
        but not over limits sent with a message.
      grace_s: how long after the hard limit a task counts as stuck.

    Attributes:
      on_stuck: called (outside the lock, from the monitor thread) with a
        :class:`Stuck` for each stuck task; None only logs it.
      on_limit: called with (task name, ``"soft"``/``"hard"``) when a limit
        fires (the metrics count it).
    """

    def __init__(
        self,
        *,
        time_limit_ms: int = DEFAULT_TIME_LIMIT_MS,
        soft_time_limit_ms: int = DEFAULT_SOFT_TIME_LIMIT_MS,
        override_time_limit_ms: int | None = None,
        override_soft_time_limit_ms: int | None = None,
        grace_s: float = HARD_LIMIT_GRACE_S,
    ) -> None:
        self.time_limit_ms = time_limit_ms
        self.soft_time_limit_ms = soft_time_limit_ms
        self.override_time_limit_ms = override_time_limit_ms
        self.override_soft_time_limit_ms = override_soft_time_limit_ms
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._running: dict[int, _Running] = {}
        #: Tasks whose hard limit fired and that have not returned yet.
        self._hard_fired: dict[int, _Running] = {}
        self.grace_s = grace_s
        self.on_stuck: Callable[[Stuck], None] | None = None
        #: Called (from the monitor thread) with the task's name and ``"soft"`` or
        #: ``"hard"`` each time a limit fires; None does nothing.
        self.on_limit: Callable[[str, str], None] | None = None
        #: (deadline, sequence, task, kind, rechecks) with kind "soft" or "hard".
        self._deadlines: list[tuple[float, int, _Running, str, int]] = []
        self._seq = 0
        self._monitor: threading.Thread | None = None
        #: When the monitor's current sleep ends (monotonic s); 0 while it is awake.
        self._wake_at = 0.0

    @property
    def actor_options(self) -> set[str]:
        return {"time_limit", "soft_time_limit"}

    def limits_ms(self, broker, message) -> tuple[int, int]:
        """(soft, hard) limits of a message, in milliseconds."""
        actor = broker.get_actor(message.actor_name)

        def pick(name: str, override: int | None, default: int) -> int:
            # A limit sent with the message (apply_async(time_limit=...))
            # wins, as in Celery; then the node's, then the actor's own.
            if message.options.get(name):
                return int(message.options[name])
            if override is not None:
                return override
            return int(actor.options.get(name) or default)

        hard = pick("time_limit", self.override_time_limit_ms, self.time_limit_ms)
        soft = pick("soft_time_limit", self.override_soft_time_limit_ms, self.soft_time_limit_ms)
        return min(soft, hard), hard

    def before_process_message(self, broker, message):
        soft, hard = self.limits_ms(broker, message)
        thread_id = threading.get_ident()
        started = time.monotonic()
        running = _Running(thread_id, celery_name(message.actor_name), message.message_id, soft, hard, message,
                           started)
        # One deadline per task at a time: the soft one, and the hard one once
        # the soft one is past (see _expire); never one with soft >= hard.
        kind, limit = ("soft", soft) if soft < hard else ("hard", hard)
        deadline = started + limit / 1000
        with self._lock:
            self._ensure_monitor()
            self._running[thread_id] = running
            self._drop_finished()
            self._push(deadline, running, kind, 0)
            # The monitor sleeps until the earliest deadline: wake it only when
            # this one comes sooner (with equal limits, tasks started later
            # never do), not at every task.
            if deadline < self._wake_at:
                self._wakeup.notify()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        # A limit that fired as the task returned lands here, when the
        # lock is taken: the task did finish, so it is not a failure.
        # Each limit fires at most once per task, hence three tries.
        for _ in range(3):
            try:
                with self._lock:
                    self._running.pop(threading.get_ident(), None)
                    self._hard_fired.pop(threading.get_ident(), None)
                return
            except (SoftTimeLimitExceeded, TimeLimitExceeded):
                continue

    after_skip_message = after_process_message

    def _drop_finished(self) -> None:
        """Drop the deadlines of finished tasks from the front of the heap (the lock is held).

        Tasks mostly end in the order they started, so this keeps the heap
        about as long as the number of running tasks, without waking the
        monitor: a busy worker would otherwise hold every message of the
        last few minutes through its deadlines.
        """
        deadlines = self._deadlines
        while deadlines and not self._is_due(deadlines[0][2], deadlines[0][3]):
            heapq.heappop(deadlines)

    def _push(self, deadline: float, running: _Running, kind: str, rechecks: int) -> None:
        self._seq += 1
        heapq.heappush(self._deadlines, (deadline, self._seq, running, kind, rechecks))

    def _ensure_monitor(self) -> None:
        if self._monitor is None or not self._monitor.is_alive():
            self._monitor = threading.Thread(target=self._watch, name="time-limits", daemon=True)
            self._monitor.start()

    def _is_due(self, running: _Running, kind: str) -> bool:
        watched = self._hard_fired if kind == "grace" else self._running
        return watched.get(running.thread_id) is running

    def _watch(self) -> None:
        while True:
            stuck = hit = None
            with self._lock:
                # Drop deadlines of tasks that already finished (the
                # thread may run another task by now).
                self._drop_finished()
                if not self._deadlines:
                    self._sleep(_IDLE_WAIT_S)
                    continue
                deadline, _, running, kind, rechecks = self._deadlines[0]
                wait_s = deadline - time.monotonic()
                if wait_s > 0:
                    self._sleep(wait_s)
                    continue
                heapq.heappop(self._deadlines)
                if kind == "grace":
                    stuck = self._stuck(running)
                else:
                    hit = self._expire(running, kind, rechecks)
            # Reported with the lock released: the hook must not hold up the tasks' start and end.
            if hit is not None:
                self._report_limit(running, hit)
            if stuck is not None:
                self._report_stuck(stuck)

    def _sleep(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for a sooner deadline (the lock is held)."""
        self._wake_at = time.monotonic() + wait_s
        try:
            self._wakeup.wait(wait_s)
        finally:
            self._wake_at = 0.0

    def _stuck(self, running: _Running) -> Stuck | None:
        """The grace after a hard limit ran out (the lock is held)."""
        if not _inside_actor_call(running.thread_id):
            # Between the call and the after hook: it is returning.
            self._push(time.monotonic() + _RECHECK_S, running, "grace", 0)
            return None
        self._hard_fired.pop(running.thread_id, None)
        return Stuck(running.thread_id, running.message, running.hard_ms)

    def _report_stuck(self, stuck: Stuck) -> None:
        message = stuck.message
        handler = self.on_stuck
        if handler is None:
            logger.error(
                "Task %s[%s] is still blocked %ss after its hard time limit; this process cannot stop it "
                "(run the worker as 'celery -A tasks worker' to have it replaced).",
                celery_name(message.actor_name), message.message_id, f"{self.grace_s:g}",
            )
            return
        try:
            handler(stuck)
        except Exception:
            logger.critical("Could not handle the stuck task %s[%s].", message.actor_name, message.message_id,
                            exc_info=True)

    def _expire(self, running: _Running, kind: str, rechecks: int) -> str | None:
        """Raise the limit's exception in the task's thread (the lock is held).

        Returns:
          The limit that fired (``soft`` or ``hard``), to be reported once the lock is released.
        """
        if not _inside_actor_call(running.thread_id):
            # Not yet entered, or already returned: look again shortly;
            # after_process_message will have unregistered a finished task.
            now = time.monotonic()
            if kind == "soft" and (rechecks >= _MAX_RECHECKS or now >= running.started + running.hard_ms / 1000):
                self._push_hard(running)
            elif rechecks < _MAX_RECHECKS:
                self._push(now + _RECHECK_S, running, kind, rechecks + 1)
            return None
        if kind == "soft":
            # The hard deadline is the task's next one.
            self._push_hard(running)
            logger.warning(
                "Soft time limit (%ss) exceeded for %s[%s]", _s(running.soft_ms), running.name, running.task_id
            )
            raise_thread_exception(running.thread_id, SoftTimeLimitExceeded)
        else:
            self._running.pop(running.thread_id, None)
            self._hard_fired[running.thread_id] = running
            self._push(time.monotonic() + self.grace_s, running, "grace", 0)
            logger.error(
                "Hard time limit (%ss) exceeded for %s[%s]", _s(running.hard_ms), running.name, running.task_id
            )
            raise_thread_exception(running.thread_id, TimeLimitExceeded)
        return kind

    def _push_hard(self, running: _Running) -> None:
        """Schedule the hard deadline of a task whose soft one is past (the lock is held)."""
        self._push(running.started + running.hard_ms / 1000, running, "hard", 0)

    def _report_limit(self, running: _Running, kind: str) -> None:
        if self.on_limit is None:
            return
        try:
            self.on_limit(running.message.actor_name, kind)
        except Exception:
            logger.critical("Could not count the %s time limit of %s[%s].", kind, running.name, running.task_id,
                            exc_info=True)


def _s(ms: int) -> str:
    return f"{ms / 1000:g}"
