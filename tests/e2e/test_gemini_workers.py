"""Worker processes answering through Gemini (the real SDK, a local stand-in of
its REST endpoint): with the configured model and system prompt, and one
writer per conversation across processes.

tests/actors/test_conversation_tasks.py proves it with threads of one
in-process worker; here two ``dramatiq actors`` processes compete, and the
model is Gemini through the real SDK, answering from a local stand-in that
takes a second per call and notes when each call starts and ends.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from app.devtools.gemini_standin import GeminiStandin
from tests.support.fixtures import CUSTOMER, text_body
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

MODEL = "gemini-e2e-model"
SYSTEM_PROMPT = "You answer for Lamp Co. Be brief."

#: Seconds each model call takes: long enough for the second batch to arrive during it.
MODEL_CALL_S = 3.0


class SlowGemini(GeminiStandin):
    """Gemini's endpoint, answering after MODEL_CALL_S, keeping each call's span."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spans: list[tuple[float, float]] = []
        self._spans_lock = threading.Lock()
        self.started = 0

    def clear(self) -> None:
        super().clear()
        with self._spans_lock:
            self.spans.clear()
            self.started = 0

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any):
        start = time.monotonic()
        with self._spans_lock:
            self.started += 1
        time.sleep(MODEL_CALL_S)
        reply = super().handle(method, path, headers, body)
        with self._spans_lock:
            self.spans.append((start, time.monotonic()))
        return reply


@pytest.fixture(scope="module")
def gemini():
    with SlowGemini() as server:
        yield server


@pytest.fixture(scope="module")
def two_process_stack(make_stack, gemini):
    yield from make_stack({"GOOGLE_API_KEY": "e2e-key", "GEMINI_API_BASE": gemini.url, "GEMINI_MODEL": MODEL,
                           "SYSTEM_PROMPT": SYSTEM_PROMPT}, worker_processes=2)


def test_the_workers_ask_the_configured_gemini_model_with_the_configured_system_prompt(two_process_stack, gemini,
                                                                                       db):
    stack = two_process_stack
    stack.reset()
    gemini.clear()
    stack.post(text_body("wamid.PROMPT", "hello"))
    (reply,) = stack.wait_for_sends(1, timeout_s=90)
    stack.wait_idle()
    (call,) = gemini.requests()
    assert (call["model"], call["api_key"]) == (MODEL, "e2e-key")
    assert call["body"]["systemInstruction"]["parts"] == [{"text": SYSTEM_PROMPT}]
    assert reply["text"]["body"] == "Stand-in Gemini reply to: hello"


def test_two_batches_of_one_conversation_never_run_the_graph_at_once_across_processes(two_process_stack, gemini,
                                                                                       db):
    stack = two_process_stack
    stack.reset()
    gemini.clear()
    # Given the first batch's model call is under way
    stack.post(text_body("wamid.ONE", "first question"))
    wait_for(lambda: gemini.started == 1, timeout_s=60)

    # When a second batch of the same conversation comes in meanwhile
    stack.post(text_body("wamid.TWO", "second question"))

    # Then both are answered, one model call after the other
    first, second = stack.wait_for_sends(2, timeout_s=90)
    stack.wait_idle()
    spans = sorted(gemini.spans)
    assert len(spans) == 2 and len(stack.sends()) == 2
    assert spans[0][1] <= spans[1][0], f"model calls overlapped: {spans}"
    assert "Conversation busy: process_message_task sent again" in stack.logs()  # (the race did happen)
    assert first["text"]["body"] == "Stand-in Gemini reply to: first question"
    assert second["text"]["body"] == "Stand-in Gemini reply to: second question"
    # And the second call was written on top of the first: one history, not a fork
    contents = [[part["text"] for part in c["parts"]] for c in gemini.requests()[-1]["body"]["contents"]]
    assert contents == [["first question"], ["Stand-in Gemini reply to: first question"], ["second question"]]
    # (the database keeps arrival order: the second question was stored before it waited for the lock)
    assert sorted((m["author"], m["text"]) for m in stack.history(CUSTOMER)["messages"]) == [
        ("ai", "Stand-in Gemini reply to: first question"), ("ai", "Stand-in Gemini reply to: second question"),
        ("customer", "first question"), ("customer", "second question")]
