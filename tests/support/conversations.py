"""Helpers for conversation tests: webhook-shaped messages and a recording model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from app.conversation import InboundMessage
from app.llm import OfflineModel, Turn


def inbound(wamid: str, text: str, *, kind: str = "text", wa_id: str | None = "15550001111",
            user_id: str | None = None, **extra) -> dict:
    """One message as the webhook hands it to process_message_task."""
    return {
        "wamid": wamid, "kind": kind, "text": text, "answerable": kind not in ("reaction", "system"),
        "wa_id": wa_id, "user_id": user_id, "profile_name": "Ana", "timestamp": 1749416383,
        "context_id": None, "reaction_to": None, "emoji": None, "new_wa_id": None, **extra,
    }


def parsed(*messages: dict) -> list[InboundMessage]:
    return [InboundMessage.parse(m) for m in messages]


class RecordingModel:
    """The offline model, remembering every input it was given.

    ``during`` runs inside each call (e.g. an operator takes over while
    the model writes); ``delay_s`` makes calls slow, and each call's
    start and end (monotonic) are kept to detect overlapping calls.
    """

    def __init__(self, *, delay_s: float = 0.0, during: Callable[[], None] | None = None) -> None:
        self.calls: list[list[Turn]] = []
        self.spans: list[tuple[float, float]] = []
        self.delay_s = delay_s
        self.during = during
        self._inner = OfflineModel()
        self._lock = threading.Lock()

    def generate(self, system_prompt: str, turns: list[Turn]) -> str:
        start = time.monotonic()
        if self.during is not None:
            self.during()
        if self.delay_s:
            time.sleep(self.delay_s)
        reply = self._inner.generate(system_prompt, turns)
        with self._lock:
            self.calls.append(list(turns))
            self.spans.append((start, time.monotonic()))
        return reply
