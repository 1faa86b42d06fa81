"""A Dramatiq broker on Redis with the runbook's key layout.

What it does differently from Dramatiq's own ``RedisBroker``:

* waiting messages of ``default`` are the list ``celery`` and those of
  ``state`` the list ``state``, holding whole messages, so ``LLEN``
  counts exactly what waits; everything else is under ``dramatiq:``;
* each list is kept sorted by priority (a Lua insert), so urgent
  messages go first and none is hidden in a side list;
* consumers block on Redis (``BLMOVE``) instead of polling with a
  backoff, and move each message atomically into an in-flight list of
  their own: a message is acknowledged (removed from it) only when its
  task has finished;
* a dedicated upkeep thread per worker process heartbeats, gives back
  the messages of processes whose heartbeat stopped, and moves due
  delayed messages from a sorted set into their queue exactly when
  they are due (woken through Redis, not by polling);
* the conversation locks a process holds are recorded under its id and
  freed in the same Redis step that gives back its messages, when it
  dies or leaves (its tasks no longer run), instead of at their TTL;
* dead-lettered messages keep their error and traceback for 7 days.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import redis
from dramatiq import Broker, Message, MessageProxy, Middleware
from dramatiq.errors import ActorNotFound, ConnectionClosed, QueueJoinTimeout, QueueNotFound
from dramatiq.middleware import MiddlewareError
from redis.backoff import NoBackoff
from redis.retry import Retry

from actors import backlog, batch, dead_letters, keys
from actors.consumer import Consumer
from actors.envelope import encode
from actors.inflight import InflightBook
from actors.lua import load_scripts
from actors.upkeep import Upkeep

__all__ = ["RedisBroker", "DEFAULT_HEARTBEAT_TIMEOUT_MS", "DEFAULT_DEAD_LETTER_TTL_MS"]

#: A worker process silent for this long is dead; its messages go back
#: to their queues within this time.
DEFAULT_HEARTBEAT_TIMEOUT_MS = 60_000

#: Most messages moved out of Celery's side lists in one Lua call.
ADOPT_BATCH = 500

#: How long dead-lettered messages are kept, in milliseconds.
DEFAULT_DEAD_LETTER_TTL_MS = 7 * 86_400_000


class RedisBroker(Broker):
    """The project's Dramatiq broker.

    Parameters:
      url: a ``redis://`` or ``rediss://`` URL (password allowed).
      client: a ready :class:`redis.Redis`, instead of ``url``.
      middleware: the complete middleware list (see :mod:`actors.setup`).
      heartbeat_timeout_ms: silence after which a worker process counts
        as dead and its in-flight messages are given back.
      dead_letter_ttl_ms: how long dead letters are kept.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        client: redis.Redis | None = None,
        middleware: list | None = None,
        heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS,
        dead_letter_ttl_ms: int = DEFAULT_DEAD_LETTER_TTL_MS,
    ) -> None:
        #: signal hook name -> the middleware that define it, in call order (see :meth:`emit_before`).
        self._hooks: dict[str, tuple[int, list[Any]]] = {}
        super().__init__(middleware=middleware)
        if client is None:
            if url is None:
                raise ValueError("RedisBroker needs a url or a client")
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=5,
                # Longer than any blocking command we send (consumer.MAX_BLOCK_S,
                # upkeep.MAX_WAIT_S), so a hung Redis cannot hang a worker.
                socket_timeout=30,
                socket_keepalive=True,
                health_check_interval=30,
            )
        self.client = client
        self.broker_id = uuid.uuid4().hex
        self.heartbeat_timeout_ms = int(heartbeat_timeout_ms)
        self.dead_letter_ttl_ms = int(dead_letter_ttl_ms)
        self.queues: dict[str, None] = {}
        self.scripts = load_scripts(client)

        self.inflight = InflightBook()
        #: True while a Worker runs on this broker: idle consumers then block
        #: for :data:`actors.consumer.WORKER_BLOCK_S`, on connections of their own
        #: that the Worker's shutdown cuts.
        self.long_blocks = False
        self._blockers: list[redis.Redis] = []
        self._blocking: set[redis.Redis] = set()
        self._blockers_lock = threading.Lock()
        self._upkeep_lock = threading.Lock()
        self._upkeep: Upkeep | None = None

    # -- Middleware signals -------------------------------------------------

    def add_middleware(self, middleware: Middleware, **options: Any) -> None:
        super().add_middleware(middleware, **options)
        self._hooks.clear()

    def _hooked(self, hook: str, *, reverse: bool) -> list[Any]:
        """The bound ``hook`` methods of the middleware that define it (not Dramatiq's no-op)."""
        cached = self._hooks.get(hook)
        if cached is not None and cached[0] == len(self.middleware):
            return cached[1]
        default = getattr(Middleware, hook, None)
        chain = reversed(self.middleware) if reverse else self.middleware
        methods = [getattr(m, hook) for m in chain if hook in vars(m) or getattr(type(m), hook, None) is not default]
        # (keyed by the list's length too, should anyone change the list by hand)
        self._hooks[hook] = (len(self.middleware), methods)
        return methods

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """Dramatiq's ``emit_before``, calling only the middleware that define the hook.

        Ten middleware, four signals per task: the no-op calls were a
        noticeable part of a no-op task's cost.  Same order, same error
        handling as Dramatiq's.
        """
        if signal == "worker_boot":
            self.long_blocks = True
        elif signal == "worker_shutdown":
            self.interrupt_consumers()
        hook = "before_" + signal
        for method in self._hooked(hook, reverse=False):
            try:
                method(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", hook, method.__self__, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """Dramatiq's ``emit_after`` (middleware in reverse), calling only those that define the hook."""
        hook = "after_" + signal
        for method in self._hooked(hook, reverse=True):
            try:
                method(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", hook, method.__self__, exc_info=True)

    # -- Blocking consumers ----------------------------------------------------

    def blocking_client(self) -> redis.Redis | None:
        """A client with a connection of its own, for one long BLMOVE (see :meth:`interrupt_consumers`);
        None when no Worker runs or it is stopping (block briefly on the shared client then)."""
        with self._blockers_lock:
            # (checked under the lock: a stop that began before this cannot miss the new blocker)
            if not self.long_blocks:
                return None
            if self._blockers:
                blocker = self._blockers.pop()
            else:
                pool = self.client.connection_pool
                kwargs = dict(pool.connection_kwargs)
                # Sent once: redis-py would send a cut BLMOVE again (blocking the full time,
                # after the stop) and one whose answer was lost too (the element the first
                # one moved would wait in flight, handed to nobody, until the consumer closes).
                kwargs["retry"] = Retry(NoBackoff(), 0)
                kwargs["redis_connect_func"] = self._connect_blocker
                blocker = redis.Redis(connection_pool=type(pool)(
                    connection_class=pool.connection_class, max_connections=1, **kwargs))
            self._blocking.add(blocker)
            return blocker

    def _connect_blocker(self, connection: Any) -> None:
        """Connect a blocker, unless the Worker is stopping: a cut that landed before its BLMOVE
        was sent leaves the connection closed, and reconnecting would block the full time."""
        if not self.long_blocks:
            raise redis.ConnectionError("the worker is stopping")
        connection.on_connect()

    def release_blocking_client(self, blocker: redis.Redis) -> None:
        with self._blockers_lock:
            self._blocking.discard(blocker)
            if self.long_blocks:
                self._blockers.append(blocker)
                return
        blocker.close()

    def interrupt_consumers(self) -> None:
        """The Worker is stopping: cut idle consumers' long waits short, and block briefly from now on."""
        with self._blockers_lock:
            self.long_blocks = False
            blocking, idle = list(self._blocking), self._blockers
            self._blockers = []
        for blocker in blocking:
            blocker.connection_pool.disconnect()
        for blocker in idle:
            blocker.close()

    # -- Broker interface -------------------------------------------------

    def declare_queue(self, queue_name: str) -> None:
        """Declare a queue (``celery`` is another name of ``default``)."""
        queue_name = keys.canonical_queue(queue_name)
        if queue_name not in self.queues:
            self.emit_before("declare_queue", queue_name)
            self.queues[queue_name] = None
            self.emit_after("declare_queue", queue_name)

    def get_declared_queues(self) -> set[str]:
        return set(self.queues)

    def get_declared_delay_queues(self) -> set[str]:
        # Delayed messages wait in a sorted set that the upkeep thread
        # promotes; workers never hold them in memory.
        return set()

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Put ``message`` in its queue, or in its delayed set for ``delay`` ms.

        Raises:
          QueueNotFound: the message names a queue never declared.
          ConnectionClosed: Redis cannot be reached.
        """
        message, queue_name, element = self.prepare(message)
        self.logger.debug("Enqueueing message %r on queue %r.", message.message_id, queue_name)
        self.emit_before("enqueue", message, delay)
        try:
            if delay is not None and delay > 0:
                self.schedule(queue_name, element, int(delay))
            else:
                self.scripts["enqueue"](keys=[keys.queue_key(queue_name)], args=[element])
        except redis.RedisError as e:
            raise ConnectionClosed(e) from None
        self.emit_after("enqueue", message, delay)
        return message

    def enqueue_many(self, messages: Iterable[Message], *, delay: int | None = None) -> list[Message]:
        """Put many messages in their queues (or delayed sets) in one round trip per
        :data:`actors.batch.BATCH_CHUNK`; see :func:`actors.batch.enqueue_many`.

        Raises:
          QueueNotFound, TypeError, ValueError: a message cannot be sent; nothing was.
          actors.batch.PartialEnqueue: Redis failed; it says which messages are queued.
        """
        return batch.enqueue_many(self, messages, delay=delay)

    def prepare(self, message: Message) -> tuple[Message, str, bytes]:
        """Check ``message`` and encode it: (the message on its canonical queue, that queue, the element).

        Raises:
          QueueNotFound: the message names a queue never declared.
          TypeError, ValueError: its arguments or options cannot be written as JSON.
        """
        if isinstance(message, MessageProxy):
            message = message._message
        queue_name = keys.canonical_queue(message.queue_name)
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        if queue_name != message.queue_name:
            message = message.copy(queue_name=queue_name)
        return message, queue_name, self.encode(message)

    def schedule(self, queue_name: str, element: bytes, delay_ms: int, *,
                 take_from: tuple[str, bytes] | None = None) -> int:
        """Put ``element`` in the delayed set of its queue, due in ``delay_ms``
        by Redis's clock; with ``take_from`` (in-flight key, element), remove
        that in-flight element in the same step.  Returns the eta in ms, or
        -1 (nothing scheduled) when ``take_from`` no longer held the element."""
        script_keys = [keys.delayed_key(queue_name), keys.wake_key()]
        args: list[Any] = [element, max(0, int(delay_ms))]
        if take_from is not None:
            script_keys.append(take_from[0])
            args.append(take_from[1])
        return int(self.scripts["schedule"](keys=script_keys, args=args))

    def encode(self, message: Message) -> bytes:
        """The list element for ``message``, its priority in front."""
        priority = message.options.get("priority")
        if priority is None:
            try:
                priority = self.get_actor(message.actor_name).priority
            except ActorNotFound:
                priority = 0
        return encode(message, priority)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 1000):
        """A blocking consumer of ``queue_name`` (see :class:`actors.consumer.Consumer`)."""
        queue_name = keys.canonical_queue(queue_name)
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        return Consumer(self, queue_name, prefetch, timeout)

    def flush(self, queue_name: str) -> None:
        """Drop the waiting and delayed messages of a queue."""
        self.client.delete(keys.queue_key(queue_name), keys.delayed_key(queue_name))

    def flush_all(self) -> None:
        for queue_name in self.queues:
            self.flush(queue_name)

    def purge(self, queue_name: str) -> int:
        """Drop the waiting messages of a queue; returns how many there were."""
        return backlog.purge_waiting(self.client, queue_name)

    def adopt_celery_side_lists(self, *, batch: int = ADOPT_BATCH) -> int:
        """Move what the old Celery left in its priority side lists into the queue lists.

        Returns:
          How many messages moved.
        """
        script_keys = [k for q in self.queues for side in backlog.side_list_keys(q) for k in (side, keys.queue_key(q))]
        moved = total = 0
        while script_keys:
            moved = int(self.scripts["adopt"](keys=script_keys, args=[batch]))
            total += moved
            if moved < batch:
                break
        if total:
            self.logger.warning("Moved %d message(s) the old Celery deployment left in its priority side lists "
                                "into the queue lists.", total)
        return total

    def queue_sizes(self, queue_name: str) -> dict[str, int]:
        """Waiting, delayed, in-flight and dead-lettered counts of a queue, read atomically.

        In flight counts the lists of processes with a heartbeat; a dead
        process's lists count until a sweep gives them back.
        """
        waiting, delayed, inflight, dead = self.scripts["sizes"](
            keys=[keys.queue_key(queue_name), keys.delayed_key(queue_name), keys.dead_key(queue_name),
                  keys.HEARTBEATS],
            args=[keys.INFLIGHT_INDEX_PREFIX],
        )
        return {"waiting": waiting, "delayed": delayed, "inflight": inflight, "dead": dead}

    def join(
        self,
        queue_name: str,
        *,
        interval: int = 50,
        timeout: int | None = None,
        include_delayed: bool = True,
    ) -> None:
        """Wait until nothing waits, runs (or is delayed) on a queue.  For tests.

        Raises:
          QueueJoinTimeout: when ``timeout`` ms pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while True:
            sizes = self.queue_sizes(queue_name)
            pending = sizes["waiting"] + sizes["inflight"] + (sizes["delayed"] if include_delayed else 0)
            if pending == 0:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(interval / 1000)

    def close(self) -> None:
        """Stop the upkeep thread and leave Redis as a clean exit should."""
        self.interrupt_consumers()
        upkeep, self._upkeep = self._upkeep, None
        if upkeep is not None:
            upkeep.stop()
        try:
            self.release_closed_inflight()
            if upkeep is not None and self.inflight.all_closed_and_idle():
                # Nothing is left in flight: leave the heartbeats, and free
                # the locks of a task that could not be stopped (the process
                # exits to be replaced; see actors.node_process).
                self._release(self.broker_id, still_fetching=False)
        except redis.RedisError:
            self.logger.warning("Could not clean up on close; the sweep of a live worker will.", exc_info=True)
        self.client.close()

    # -- Shared with consumers and the upkeep thread ----------------------

    def open_inflight(self, queue_name: str) -> str:
        """Register a new in-flight list for a consumer; starts the upkeep."""
        key = self.inflight.open(
            lambda n: keys.inflight_key(queue_name, f"{self.broker_id}.{n}"), keys.queue_key(queue_name)
        )
        with self._upkeep_lock:
            if self._upkeep is None:
                self._upkeep = Upkeep(self)
                self._upkeep.start()
        # Beat at once, so that the new list is known before it holds anything.
        try:
            self.heartbeat()
        except BaseException:
            self.inflight.discard(key)
            raise
        return key

    def heartbeat(self) -> None:
        """Tell Redis this process lives, and which in-flight lists it owns."""
        self.scripts["heartbeat"](
            keys=[keys.HEARTBEATS, keys.inflight_index_key(self.broker_id)],
            args=[self.broker_id, *self.inflight.pairs()],
        )

    def refresh_heartbeats(self, broker_ids: list[str]) -> None:
        """Beat for worker processes known to be alive (a supervisor's live children).

        A process whose task holds the GIL cannot beat from its upkeep
        thread; without this its messages would be swept to another
        process while it still runs them.  A process without a heartbeat
        (released, swept) is not brought back.
        """
        if broker_ids:
            self.scripts["refresh"](keys=[keys.HEARTBEATS], args=list(broker_ids))

    def sweep(self) -> tuple[int, int]:
        """Give back the messages of dead worker processes.

        Returns:
          (processes found dead, messages given back)
        """
        silence_ms = self.heartbeat_timeout_ms // 2
        dead, moved = self.scripts["sweep"](keys=[keys.HEARTBEATS], args=[silence_ms, keys.INFLIGHT_INDEX_PREFIX])
        if dead:
            self.logger.warning(
                "Gave back %d message(s) held by %d worker process(es) whose heartbeat stopped.", moved, dead
            )
        return int(dead), int(moved)

    def release_process(self, broker_id: str, *, still_fetching: bool = False) -> int:
        """Give back every message a worker process holds, busy or not.

        For a process known to be dead (its supervisor reaped it) or
        about to exit without finishing its tasks: its messages need not
        wait for the sweep.  With ``still_fetching`` (the process's own
        consumers may still take a message before it exits), the process
        stays known as silent, so the next sweep gives back what they took.
        The locks the process held (:func:`actors.keys.held_key`) are
        freed in the same step: its tasks no longer run.

        Returns how many messages went back to their queues.
        """
        moved, freed = self._release(broker_id, still_fetching=still_fetching)
        if moved:
            self.logger.warning("Gave back %d message(s) held by worker process %s.", moved, broker_id)
        if freed:
            self.logger.warning("Freed %d conversation lock(s) held by worker process %s.", freed, broker_id)
        return moved

    def _release(self, broker_id: str, *, still_fetching: bool) -> tuple[int, int]:
        """(messages given back, locks freed) of ``release.lua``."""
        moved, freed = self.scripts["release"](
            keys=[keys.HEARTBEATS, keys.inflight_index_key(broker_id), keys.held_key(broker_id)],
            args=[broker_id, int(still_fetching)],
        )
        return int(moved), int(freed)

    def release_closed_inflight(self) -> None:
        """Give back what closed consumers left in flight, once none of it is busy."""
        for key, queue_key in self.inflight.closed_and_idle():
            moved = self.scripts["recover"](keys=[key, queue_key], args=[])
            if moved:
                self.logger.warning("Gave back %d message(s) a closed consumer left in flight.", moved)
            self.client.hdel(keys.inflight_index_key(self.broker_id), key)
            self.inflight.forget_if_idle(key)

    def promote_due(self) -> int:
        """Move due delayed messages into their queues.

        Returns:
          Milliseconds until the next delayed message is due, or -1 for none.
        """
        key_pairs = [k for q in self.queues for k in (keys.delayed_key(q), keys.queue_key(q))]
        if not key_pairs:
            return -1
        _moved, wait_ms = self.scripts["promote"](keys=key_pairs, args=[500])
        return int(wait_ms)

    def dead_letter(self, inflight: str, element: bytes, message_id: str, *, queue_name: str, error: str,
                    tb: str | None, message: dict[str, Any] | None) -> bool:
        """Move one in-flight element to the dead-letter set of its queue.

        Returns False (nothing recorded) when the element was no longer in flight."""
        return dead_letters.record(self.scripts, inflight=inflight, element=element, message_id=message_id,
                            queue_name=queue_name, error=error, tb=tb, message=message,
                            ttl_ms=self.dead_letter_ttl_ms)

    def dead_letters(self, queue_name: str) -> list[dict[str, Any]]:
        """The dead-letter records of a queue, oldest first."""
        return dead_letters.records(self.client, queue_name)

    def retry_dead_letter(self, queue_name: str, message_id: str) -> dict[str, Any]:
        """Put a dead letter back in its queue, retries reset (see :func:`actors.dead_letters.retry`)."""
        return dead_letters.retry(self.client, self.scripts, keys.canonical_queue(queue_name), message_id,
                                  encode=self.encode)

    def delete_dead_letter(self, queue_name: str, message_id: str) -> None:
        """Forget a dead letter (see :func:`actors.dead_letters.delete`)."""
        dead_letters.delete(self.scripts, keys.canonical_queue(queue_name), message_id)

    def trim_dead_letters(self) -> int:
        """Drop dead letters past their time to keep."""
        return dead_letters.trim(self.scripts, list(self.queues), self.dead_letter_ttl_ms)
