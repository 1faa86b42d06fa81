"""An in-memory WhatsApp client that records what it is asked to do.

It has the interface of app.whatsapp's client (``send_text`` returning
a wamid, ``mark_read``), so the lead can swap in the real client on the
real stand-in server behind the ``whatsapp`` fixture.  It can be told to
fail: a transient or permanent error (by WhatsApp error code), or a
crash right after WhatsApp accepted a message (the task dies before it
stores the wamid).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from app.errors import AppError, TransientError


class FakeTransientError(TransientError):
    def __init__(self, code: int, title: str) -> None:
        super().__init__(f"({code}) {title}")
        self.code, self.title = code, title


class FakePermanentError(AppError):
    def __init__(self, code: int, title: str) -> None:
        super().__init__(f"({code}) {title}")
        self.code, self.title = code, title


class Crash(BaseException):
    """The worker dies here (BaseException: no handler of the code under test catches it)."""


@dataclass(frozen=True)
class Sent:
    to: str | None
    recipient: str | None
    text: str
    callback_data: str | None
    wamid: str


class RecordingWhatsApp:
    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.read: list[tuple[str, bool]] = []
        #: Errors the next sends raise, in order (an exception instance each).
        self.fail_next: list[BaseException] = []
        #: Raise Crash right after the next accepted send (the task dies before storing its wamid).
        self.crash_after_send: bool = False
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def send_text(self, *, to: str | None, recipient: str | None, text: str,
                  callback_data: str | None = None) -> str:
        if (to is None) == (recipient is None):
            raise ValueError("exactly one of to and recipient must be given")
        with self._lock:
            if self.fail_next:
                raise self.fail_next.pop(0)
            wamid = f"wamid.out.{next(self._ids)}"
            self.sent.append(Sent(to, recipient, text, callback_data, wamid))
            if self.crash_after_send:
                self.crash_after_send = False
                raise Crash(f"died after WhatsApp accepted {wamid}")
            return wamid

    def mark_read(self, wamid: str, *, typing: bool = True) -> None:
        with self._lock:
            self.read.append((wamid, typing))
