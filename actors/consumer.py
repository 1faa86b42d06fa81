"""The consumer side of :class:`actors.broker.RedisBroker`."""

from __future__ import annotations

import hashlib
import time
import traceback
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import redis
from dramatiq import Consumer as _DramatiqConsumer
from dramatiq import Message, MessageProxy
from dramatiq.errors import ConnectionClosed
from dramatiq.logging import get_logger

from actors import keys
from actors.envelope import UndecodableMessage, decode

if TYPE_CHECKING:
    from actors.broker import RedisBroker

__all__ = ["Consumer", "InflightMessage", "MAX_BLOCK_S", "WORKER_BLOCK_S"]

#: Longest single BLMOVE, in seconds.  Redis answers as soon as there is
#: work; this only bounds how late the worker notices a stop.
MAX_BLOCK_S = 2.0

#: How long an idle consumer of a running Worker blocks in one BLMOVE, in
#: seconds: one Redis command per queue and process that often (Dramatiq's
#: one-second worker timeout made it four a second for a two-process
#: worker of two queues).  The Worker's shutdown cuts the wait short
#: (:meth:`actors.broker.RedisBroker.interrupt_consumers`).  Below the
#: connection's socket timeout (30 s).
WORKER_BLOCK_S = 10.0


class InflightMessage(MessageProxy):
    """A message handed to the worker, with the exact element it came as.

    Acknowledging removes that element from the in-flight list it was
    moved to, even when the consumer that fetched it has been replaced.
    """

    def __init__(self, message, *, raw: bytes, inflight_key: str) -> None:
        super().__init__(message)
        self.raw = raw
        self.inflight_key = inflight_key
        #: (message, delay in ms) to schedule in the same step as the ack.
        self.retry: tuple[Message, int] | None = None
        #: Set when the task was given up at its hard time limit and the
        #: message already handled (:mod:`actors.abandoned`): a late return of
        #: the blocked thread must not ack, retry or dead-letter it again.
        self.abandoned = False
        #: Set when the run starts (:func:`actors.middleware.task_log.begin`).
        self.running_task: Any = None
        #: Set when the metrics counted the run (:class:`actors.middleware.TaskMetrics`).
        self.task_metrics: Any = None

    def retry_on_ack(self, message: Message, delay_ms: int) -> None:
        """Schedule ``message`` when this one is acknowledged, atomically with
        the ack: a Redis failure in between can neither lose the retry nor
        leave the attempt in flight (the ack is tried again until it works)."""
        self.retry = (message, delay_ms)


class Consumer(_DramatiqConsumer):
    """Takes messages of one queue into an in-flight list of its own.

    ``__next__`` first drains what it already moved, then takes up to
    ``prefetch`` messages in one Lua call, and when the queue is empty
    blocks in ``BLMOVE`` for up to ``timeout`` ms (:data:`WORKER_BLOCK_S`
    in a running Worker): a message sent to an idle worker starts within
    milliseconds, and an idle consumer sends one command per block.

    While it holds most of its prefetch it parks until a quarter of it is
    free again (:meth:`actors.inflight.InflightBook.park`); the acks of
    tasks that end meanwhile are left to it and go with its next fetch, in
    the same Lua call (at most :data:`actors.inflight.ACK_DELAY_S` later):
    a busy worker makes one round trip per few messages instead of two per
    message.  An ack while no consumer is parked is sent at once, as is a
    retry's (scheduled in the same step) and a nack.
    """

    def __init__(self, broker: RedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        self.logger = get_logger(__name__, type(self))
        self.broker = broker
        self.client = broker.client
        self.queue_name = queue_name
        self.queue_key = keys.queue_key(queue_name)
        self.prefetch = max(1, int(prefetch))
        #: Fewest messages fetched at once while some are held: a quarter of the
        #: prefetch (Dramatiq's is twice its threads, so the threads keep work).
        self.batch = max(1, self.prefetch // 4)
        self.timeout_s = max(0.01, min(timeout / 1000, MAX_BLOCK_S))
        self.cache: deque[bytes] = deque()
        self.idle = False
        try:
            self.inflight_key = broker.open_inflight(queue_name)
        except redis.RedisError as e:
            raise ConnectionClosed(e) from None

    def __next__(self) -> InflightMessage | None:
        book = self.broker.inflight
        try:
            while True:
                if self.cache:
                    message = self._hand_out(self.cache.popleft())
                    if message is not None:
                        return message
                    continue

                room = book.room(self.inflight_key, self.prefetch)
                if room < self.batch:
                    # Enough is held: wait until a few tasks ended, and send
                    # their acks (deferred to us meanwhile) with the next fetch.
                    if not book.park(self.inflight_key, self.prefetch, self.batch, self.timeout_s):
                        return None
                    room = book.room(self.inflight_key, self.prefetch)
                acks = book.take_acks()

                if acks or (room > 0 and not self.idle):
                    taken = self._fetch(max(0, room), acks)
                    if taken:
                        self.idle = False
                        self.cache.extend(taken)
                        continue
                if room <= 0:
                    continue  # (acks only, or another consumer sent them: wait again)

                # Nothing waits: block in Redis until something does.
                element = self._block()
                if element is None:
                    self.idle = True
                    return None
                self.idle = False
                self.cache.append(cast(bytes, element))
        except redis.RedisError as e:
            raise ConnectionClosed(e) from None

    def _fetch(self, room: int, acks: list[tuple[str, bytes]]) -> list[bytes]:
        """Send ``acks`` and take up to ``room`` messages, in one round trip."""
        script_keys = [self.queue_key, self.inflight_key]
        args: list[Any] = [room]
        for key, element in acks:
            script_keys.append(key)
            args.append(element)
        try:
            taken = self.broker.scripts["fetch"](keys=script_keys, args=args)
        except BaseException:
            self.broker.inflight.acks_failed(acks)
            raise
        self.broker.inflight.acks_sent(acks)
        return cast(list[bytes], taken)

    def _block(self) -> bytes | None:
        """One BLMOVE: the consumer's own timeout, or :data:`WORKER_BLOCK_S` in a running Worker."""
        broker = self.broker
        blocker = broker.blocking_client()
        if blocker is None:
            # Redis takes fractional timeouts; redis-py's stubs say int.
            return cast(bytes | None, self.client.blmove(
                self.queue_key, self.inflight_key, self.timeout_s, "RIGHT", "LEFT"))  # type: ignore[arg-type]
        try:
            return cast(bytes | None, blocker.blmove(
                self.queue_key, self.inflight_key, WORKER_BLOCK_S, "RIGHT", "LEFT"))  # type: ignore[arg-type]
        except (redis.RedisError, OSError, ValueError):
            # (a connection closed under a read may also surface as OSError or ValueError)
            if broker.long_blocks:
                raise
            # Cut short by the Worker's shutdown.  Had Redis moved a message
            # before the cut, it waits in this consumer's in-flight list, which
            # goes back to its queue when the consumer closes.
            return None
        finally:
            broker.release_blocking_client(blocker)

    def _hand_out(self, raw: bytes) -> InflightMessage | None:
        try:
            decoded = decode(raw, self.queue_name)
        except UndecodableMessage as e:
            self.logger.error("Dead-lettering an unreadable message from queue %r: %s", self.queue_name, e)
            self.broker.dead_letter(
                self.inflight_key, raw, "undecodable-" + hashlib.sha1(raw).hexdigest()[:20],
                queue_name=self.queue_name, error=f"UndecodableMessage({str(e)!r})", tb=None, message=None,
            )
            return None
        if decoded.eta_ms is not None:
            # A Celery message with a future eta: wait in the delayed set.
            delay_ms = decoded.eta_ms - int(time.time() * 1000)
            self.broker.schedule(self.queue_name, self.broker.encode(decoded.message), delay_ms,
                                 take_from=(self.inflight_key, raw))
            return None
        self.broker.inflight.mark_busy(self.inflight_key, raw)
        return InflightMessage(decoded.message, raw=raw, inflight_key=self.inflight_key)

    def ack(self, message: MessageProxy) -> None:
        message = _inflight(message)
        if message.abandoned:
            return
        try:
            if message.retry is not None:
                retry, delay_ms = message.retry
                self.broker.schedule(retry.queue_name, self.broker.encode(retry), delay_ms,
                                     take_from=(message.inflight_key, message.raw))
            elif self.broker.inflight.defer_ack(message.inflight_key, message.raw):
                return  # sent with the next fetch of the parked consumer, within milliseconds
            else:
                self.client.lrem(message.inflight_key, -1, message.raw)  # type: ignore[arg-type]
        except redis.RedisError as e:
            # Dramatiq tries the ack again until Redis answers.
            raise ConnectionClosed(e) from None
        self.broker.inflight.mark_done(message.inflight_key, [message.raw])

    def nack(self, message: MessageProxy) -> None:
        message = _inflight(message)
        if message.abandoned:
            return
        if message._exception is not None:
            error, tb = format_exception(message._exception)
        else:
            error, tb = message.options.get("error", "unknown error"), message.options.get("traceback")
        try:
            self.broker.dead_letter(
                message.inflight_key, message.raw, message.message_id,
                queue_name=self.queue_name, error=error, tb=tb, message=message._message.asdict(),
            )
        except redis.RedisError as e:
            raise ConnectionClosed(e) from None
        self.broker.inflight.mark_done(message.inflight_key, [message.raw])

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        by_key: dict[str, list[bytes]] = {}
        for message in map(_inflight, messages):
            by_key.setdefault(message.inflight_key, []).append(message.raw)
        failed: redis.RedisError | None = None
        for inflight_key, raws in by_key.items():
            self.logger.debug("Giving back %d message(s) to queue %r.", len(raws), self.queue_name)
            try:
                self.broker.scripts["requeue"](keys=[inflight_key, self.queue_key], args=raws)
            except redis.RedisError as e:
                # They stay in flight, no longer busy: given back once this
                # consumer is closed (release_closed_inflight) or its process
                # is swept.
                failed = e
            self.broker.inflight.mark_done(inflight_key, raws)
        if failed is not None:
            raise ConnectionClosed(failed)

    def close(self) -> None:
        try:
            acks = self.broker.inflight.take_acks()
            if acks:
                self._fetch(0, acks)
            if self.cache:
                self.broker.scripts["requeue"](keys=[self.inflight_key, self.queue_key], args=list(self.cache))
                self.cache.clear()
        except redis.RedisError:
            self.logger.warning("Could not give back prefetched messages; the upkeep thread will.", exc_info=True)
        finally:
            self.broker.inflight.close(self.inflight_key)


def format_exception(exc: BaseException | None) -> tuple[str, str | None]:
    """(repr, formatted traceback) of an exception, for dead-letter records."""
    if exc is None:
        return "unknown error", None
    return repr(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _inflight(message: MessageProxy) -> InflightMessage:
    if not isinstance(message, InflightMessage):
        raise TypeError(f"not a message of this broker: {message!r}")
    return message
