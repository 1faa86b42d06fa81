"""What one worker process knows of its in-flight lists (no Redis here)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

__all__ = ["InflightBook"]


class _Entry:
    __slots__ = ("queue_key", "closed", "busy")

    def __init__(self, queue_key: str) -> None:
        self.queue_key = queue_key
        self.closed = False
        #: Elements handed to the worker and not yet acked, nacked or requeued.
        self.busy: Counter[bytes] = Counter()


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

    def busy_count(self, key: str) -> int:
        with self._cond:
            return sum(self._entries[key].busy.values())

    def wait_for_room(self, key: str, limit: int, timeout_s: float) -> bool:
        """Block until fewer than ``limit`` elements of ``key`` are busy."""
        with self._cond:
            return self._cond.wait_for(lambda: sum(self._entries[key].busy.values()) < limit, timeout_s)

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
