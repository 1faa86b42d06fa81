"""Worker processes answering through Gemini (the real SDK, a local stand-in of
its REST endpoint): with the configured model and system prompt, and one
writer per conversation across processes.

tests/actors/test_conversation_tasks.py proves it with threads of one
in-process worker; here two ``dramatiq actors`` processes compete, and the
model is Gemini through the real SDK, answering from a local stand-in that
takes a second per call and notes when each call starts and ends.  And what
reaches Gemini's endpoint of a longer conversation: the last
MODEL_HISTORY_MESSAGES messages, no reaction.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from app.checkpoints import open_checkpoints
from app.devtools.gemini_standin import GeminiStandin
from app.graph import UNANSWERABLE_NAME, ConversationGraph
from app.llm import OfflineModel
from tests.support.fixtures import CUSTOMER, raw, text_body
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


#: The window of the history test's stack.
HISTORY_MESSAGES = 3


@pytest.fixture(scope="module")
def windowed_gemini():
    with GeminiStandin() as server:
        yield server


@pytest.fixture(scope="module")
def windowed_stack(make_stack, windowed_gemini):
    """Gemini (answering at once), the model shown the last 3 messages, and a
    2 s buffer window, so that a reaction posted right after a text joins its batch."""
    yield from make_stack({"GOOGLE_API_KEY": "e2e-key", "GEMINI_API_BASE": windowed_gemini.url,
                           "GEMINI_MODEL": MODEL, "MODEL_HISTORY_MESSAGES": str(HISTORY_MESSAGES),
                           "BUFFER_WINDOW_SECONDS": "2"})


def reaction_body(wamid: str, emoji: str, to: str) -> bytes:
    """reaction.json by the customer of text_body, with another wamid, emoji and target."""
    body = json.loads(raw("reaction.json"))
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message["id"], message["reaction"] = wamid, {"message_id": to, "emoji": emoji}
    return json.dumps(body).encode()


def _texts(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["role"], "".join(p["text"] for p in c["parts"])) for c in request["body"]["contents"]]


def test_gemini_is_sent_only_the_recent_history_and_no_reaction(windowed_stack, windowed_gemini, db):
    stack, gemini = windowed_stack, windowed_gemini
    stack.reset()
    gemini.clear()
    # Given two answered questions
    stack.post(text_body("wamid.HIST1", "question one"))
    stack.wait_for_sends(1)
    stack.post(text_body("wamid.HIST2", "question two"))
    (_, second) = stack.wait_for_sends(2)
    # And a reaction to the second answer: stored, not answered, Gemini not asked
    stack.post(reaction_body("wamid.HISTR1", "👍", second["wamid"]))
    wait_for(lambda: any(m["wamid"] == "wamid.HISTR1" for m in stack.history(CUSTOMER)["messages"]))
    stack.wait_idle()
    assert len(gemini.requests()) == 2 and len(stack.sends()) == 2

    # When a third question comes with a reaction right behind it, within the buffer window
    stack.post(text_body("wamid.HIST3", "question three"))
    stack.post(reaction_body("wamid.HISTR2", "🙏", second["wamid"]))
    stack.wait_for_sends(3)
    stack.wait_idle()

    # Then Gemini was asked once more, with the last 3 messages of the history and no reaction
    requests = gemini.requests()
    assert len(requests) == 3 and len(stack.sends()) == 3
    assert _texts(requests[-1]) == [("user", "question two"), ("model", "Stand-in Gemini reply to: question two"),
                                    ("user", "question three")]
    assert not any("reaction" in text for r in requests for _, text in _texts(r))
    # And both reactions are stored, and the checkpoint keeps the whole history with them
    stored = [m["wamid"] for m in stack.history(CUSTOMER)["messages"]]
    assert {"wamid.HISTR1", "wamid.HISTR2"} <= set(stored)
    checkpoints = open_checkpoints(stack.env["DB_URL"])
    try:
        history = ConversationGraph(checkpoints.saver, OfflineModel()).messages(CUSTOMER)
    finally:
        checkpoints.close()
    assert len(history) == 8
    assert {m.id for m in history if m.name == UNANSWERABLE_NAME} == {"wamid.HISTR1", "wamid.HISTR2"}
