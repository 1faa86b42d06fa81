"""What one worker process knows of its in-flight lists (no Redis here)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

__all__ = ["InflightBook"]


#: Longest an ack waits for others to share its round trip, in seconds.
ACK_DELAY_S = 0.005


class _Entry:
    __slots__ = ("queue_key", "closed", "busy", "acking")

    def __init__(self, queue_key: str) -> None:
        self.queue_key = queue_key
        self.closed = False
        #: Elements handed to the worker and not yet acked, nacked or requeued.
        self.busy: Counter[bytes] = Counter()
        #: How many of them are acked but wait for a consumer's next round trip.
        self.acking = 0

    def held(self) -> int:
        """Elements handed out whose task has not ended (deferred acks are done with)."""
        return sum(self.busy.values()) - self.acking


class InflightBook:
    """The in-flight lists of this process's consumers, and what of them is busy.

    An element is busy from the moment a consumer hands it to the worker
    until it is acked, nacked or given back.  A closed consumer's list may
    still hold elements nobody will hand out (fetched, then the
    connection broke); once none of it is busy, all of it can go back to
    its queue.  Thread-safe: consumers, worker threads and the upkeep
    thread share it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._entries: dict[str, _Entry] = {}
        self._seq = 0
        #: (in-flight key, element) of acks a consumer sends with its next round trip.
        self._acks: list[tuple[str, bytes]] = []
        #: Consumers waiting in :meth:`park`.
        self._parked = 0

    def open(self, make_key, queue_key: str) -> str:
        """Register a new list; ``make_key(n)`` names it from a sequence number."""
        with self._cond:
            self._seq += 1
            key = make_key(self._seq)
            self._entries[key] = _Entry(queue_key)
            return key

    def discard(self, key: str) -> None:
        with self._cond:
            self._entries.pop(key, None)

    def close(self, key: str) -> None:
        with self._cond:
            entry = self._entries.get(key)
            if entry is not None:
                entry.closed = True

    def mark_busy(self, key: str, element: bytes) -> None:
        with self._cond:
            self._entries[key].busy[element] += 1

    def mark_done(self, key: str, elements: Iterable[bytes]) -> None:
        with self._cond:
            busy = self._entries[key].busy
            for element in elements:
                busy[element] -= 1
                if busy[element] <= 0:
                    del busy[element]
            self._cond.notify_all()

    # -- acks sent with a consumer's next round trip ----------------------------------

    def defer_ack(self, key: str, element: bytes) -> bool:
        """Leave the ack of ``element`` to a consumer parked in :meth:`park`, which
        sends it within :data:`ACK_DELAY_S` with its next fetch, in one round trip.
        False when no consumer is parked: the caller acks it itself."""
        with self._cond:
            if not self._parked:
                return False
            self._acks.append((key, element))
            self._entries[key].acking += 1
            self._cond.notify_all()
            return True

    def take_acks(self) -> list[tuple[str, bytes]]:
        """The deferred acks, for the caller's round trip (:meth:`acks_sent` or :meth:`acks_failed` after)."""
        with self._cond:
            acks, self._acks = self._acks, []
            return acks

    def acks_sent(self, acks: list[tuple[str, bytes]]) -> None:
        with self._cond:
            for key, element in acks:
                entry = self._entries[key]
                entry.acking -= 1
                entry.busy[element] -= 1
                if entry.busy[element] <= 0:
                    del entry.busy[element]
            self._cond.notify_all()

    def acks_failed(self, acks: list[tuple[str, bytes]]) -> None:
        """Redis failed: the acks wait for the next round trip of any consumer of this process."""
        with self._cond:
            self._acks[:0] = acks

    def room(self, key: str, limit: int) -> int:
        """How many more messages ``key``'s consumer may take (``limit`` is its prefetch)."""
        with self._cond:
            return limit - self._entries[key].held()

    def park(self, key: str, limit: int, batch: int, timeout_s: float) -> bool:
        """Wait until ``batch`` more messages may be taken, or acks wait to be sent (then a few
        milliseconds more, for others to join them); False when ``timeout_s`` passed with neither."""
        entry = self._entries[key]
        with self._cond:
            self._parked += 1
            try:
                if not self._cond.wait_for(lambda: limit - entry.held() >= batch or self._acks, timeout_s):
                    return False
                if limit - entry.held() < batch:
                    self._cond.wait_for(lambda: limit - entry.held() >= batch, ACK_DELAY_S)
                return True
            finally:
                self._parked -= 1

    def busy_count(self, key: str) -> int:
        with self._cond:
            return sum(self._entries[key].busy.values())

    def pairs(self) -> list[str]:
        """(in-flight key, queue key) of every list, flattened, for the heartbeat."""
        with self._cond:
            return [part for key, entry in self._entries.items() for part in (key, entry.queue_key)]

    def closed_and_idle(self) -> list[tuple[str, str]]:
        """(in-flight key, queue key) of closed lists none of which is busy."""
        with self._cond:
            return [(k, e.queue_key) for k, e in self._entries.items() if e.closed and not e.busy]

    def forget_if_idle(self, key: str) -> None:
        with self._cond:
            entry = self._entries.get(key)
            if entry is not None and entry.closed and not entry.busy:
                del self._entries[key]

    def all_closed_and_idle(self) -> bool:
        with self._cond:
            return all(e.closed and not e.busy for e in self._entries.values())

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)
