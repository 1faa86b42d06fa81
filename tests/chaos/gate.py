"""The WhatsApp stand-in with a gate: it can hold requests of one kind once they have arrived.

A held request has reached "WhatsApp" whole; when the gate opens it is
answered (and recorded) as usual, also when the worker that sent it is
dead by then, as Meta sends a message whose answer never reached us.
Holding every worker thread in such a request is how the chaos tests
pick the moment of a kill: not "some time after the load started", but
"while every thread waits for WhatsApp", with the model's turn written
(``read``: the typing indicator, sent just before the model is asked)
or with the reply's outbox row written (``send``).
"""

from __future__ import annotations

import threading
from typing import Any

from app.devtools.standin import Reply
from app.devtools.whatsapp_standin import WhatsAppStandin

__all__ = ["GatedWhatsApp"]

#: Longest a request stays held, in seconds (a failed test must not hang its threads).
MAX_HOLD_S = 120.0


class GatedWhatsApp(WhatsAppStandin):
    """:class:`WhatsAppStandin` whose requests of a kind (``send``, ``read``) can be held."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gate = threading.Condition()
        self._closed: set[str] = set()
        self._held = 0

    def hold(self, kind: str) -> None:
        """Hold every request of ``kind`` that arrives from now on, until :meth:`release`."""
        with self._gate:
            self._closed.add(kind)

    def release(self) -> None:
        """Answer the held requests and hold no more."""
        with self._gate:
            self._closed.clear()
            self._gate.notify_all()

    def held(self) -> int:
        """How many requests are held right now."""
        with self._gate:
            return self._held

    def _messages(self, phone_number_id: str, headers: dict[str, str], body: Any) -> Reply:
        kind = "read" if isinstance(body, dict) and body.get("status") == "read" else "send"
        with self._gate:
            if kind in self._closed:
                self._held += 1
                try:
                    self._gate.wait_for(lambda: kind not in self._closed, MAX_HOLD_S)
                finally:
                    self._held -= 1
        return super()._messages(phone_number_id, headers, body)
