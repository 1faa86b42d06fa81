"""Conversation rules of DESIGN.md, end to end: Meta retries, buffering, the
maximum wait, a changed number, takeover and handback through the operator
API, WhatsApp's errors.

Same stack as test_fixtures.py (gunicorn and ``dramatiq actors`` as
subprocesses, real Redis and PostgreSQL, the WhatsApp stand-in, the
offline model, which echoes the customer's last turn).
"""

from __future__ import annotations

import pytest

from app.checkpoints import open_checkpoints
from app.graph import ConversationGraph, to_turns
from app.llm import OfflineModel
from tests.support.fixtures import CUSTOMER, OFFLINE, raw, text_body
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

HOUR_MS = 3600 * 1000


def shift_redis_clock(client, ms: int) -> None:
    """Let ``ms`` pass for the application's keys in Redis: every TTL
    shrinks by ``ms`` and keys it would have expired are gone."""
    for key in client.scan_iter("app:*"):
        ttl = client.pttl(key)
        if ttl < 0:
            continue
        if ttl <= ms:
            client.delete(key)
        else:
            client.pexpire(key, ttl - ms)


@pytest.fixture(scope="module")
def patient_stack(make_stack):
    """A stack with the production buffer window (3 s) and a 6 s maximum wait."""
    yield from make_stack({"BUFFER_WINDOW_SECONDS": "3", "BUFFER_MAX_WAIT_SECONDS": "6"})


@pytest.fixture
def patient(patient_stack, db):
    patient_stack.reset()
    yield patient_stack
    patient_stack.wait_idle()


def test_a_meta_retry_of_the_same_body_an_hour_later_gets_no_second_reply(stack):
    # Given the customer was answered
    body = raw("text.json")
    assert stack.post(body).json()["messages"] == 1
    stack.wait_for_sends(1)
    stack.wait_idle()

    # When Meta sends the same body again an hour later
    shift_redis_clock(stack.redis, HOUR_MS)
    retry = stack.post(body)

    # Then it is accepted as a duplicate, and nothing more is sent
    assert retry.status_code == 200
    assert (retry.json()["messages"], retry.json()["duplicates"]) == (0, 1)
    stack.wait_idle()
    assert len(stack.sends()) == 1
    assert len(stack.history(CUSTOMER)["messages"]) == 2


def test_a_retry_after_redis_forgot_the_wamid_still_gets_no_second_reply(stack):
    # Given the customer was answered, and then Redis lost its dedup keys (a restore, a flush)
    body = raw("text.json")
    stack.post(body)
    stack.wait_for_sends(1)
    stack.wait_idle()
    stack.redis.delete(*stack.redis.keys("app:seen:*"))

    # When Meta retries
    assert stack.post(body).json()["messages"] == 1  # Redis could not tell

    # Then the database's unique wamid and the outbox keep it to one reply
    stack.wait_idle()
    assert len(stack.sends()) == 1
    assert [m["author"] for m in stack.history(CUSTOMER)["messages"]] == ["customer", "ai"]


def test_three_messages_within_the_window_get_one_reply_written_from_all_three_in_order(patient):
    # When the customer sends three messages in a row (three webhooks, 3 s window)
    for n, text in enumerate(("hi", "I ordered a lamp", "when does it arrive?")):
        response = patient.post(text_body(f"wamid.THREE{n}", text))
        assert response.json()["messages"] == 1

    # Then one reply comes, and the one model call had all three, in order
    (reply,) = patient.wait_for_sends(1)
    patient.wait_idle()
    assert len(patient.sends()) == 1
    assert reply["text"]["body"] == OFFLINE + "hi I ordered a lamp when does it arrive?"
    assert [m["text"] for m in patient.history(CUSTOMER)["messages"]] == [
        "hi", "I ordered a lamp", "when does it arrive?", reply["text"]["body"]]


def test_a_customer_who_keeps_typing_is_answered_at_the_maximum_wait(patient):
    # Given a customer who writes every 0.3 s, never leaving the 3 s window quiet
    sent_texts: list[str] = []

    def keep_typing():
        text = f"m{len(sent_texts) + 1}"
        assert patient.post(text_body(f"wamid.TYPING{len(sent_texts)}", text)).json()["messages"] == 1
        sent_texts.append(text)
        return patient.sends()

    # When they keep going until an answer arrives
    (first,) = wait_for(keep_typing, timeout_s=90, interval_s=0.3)

    # Then they got it while still typing (the 6 s maximum wait), written
    # from the first messages, in order
    assert first["text"]["body"].startswith(OFFLINE + "m1 m2 m3")
    # And once they stop, the rest is answered too: every message exactly once, in order
    wait_for(lambda: patient.sends()[-1]["text"]["body"].endswith(f" {sent_texts[-1]}"), timeout_s=60)
    patient.wait_idle()
    replies = patient.sends()
    assert len(replies) >= 2
    assert " ".join(r["text"]["body"].removeprefix(OFFLINE) for r in replies) == " ".join(sent_texts)


def test_after_a_number_change_the_new_number_continues_the_conversation_and_gets_the_replies(stack):
    # Given a customer who was answered, then changed number (system message)
    stack.post(text_body("wamid.NUM1", "my order?"))
    stack.wait_for_sends(1)
    stack.post(raw("system_user_changed_number.json"))
    _wait_history(stack, lambda h: h["wa_id"] == "16505559876")
    stack.wait_idle()

    # When they write from the new number
    stack.post(text_body("wamid.NUM2", "it is me, new phone", wa_id="16505559876"))

    # Then the reply goes to the new number, in the same conversation
    _, reply = stack.wait_for_sends(2)
    stack.wait_idle()
    assert reply["to"] == "16505559876"
    assert reply["text"]["body"] == OFFLINE + "it is me, new phone"
    assert [m["wamid"] for m in stack.history(CUSTOMER)["messages"] if m["author"] == "customer"] == [
        "wamid.NUM1", "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRTWVNURU0wMDAwMDAwMDAwMDAwAA==", "wamid.NUM2"]
    assert len(stack.sends()) == 2


def _wait_history(stack, predicate, timeout_s: float = 60):
    """The history once ``predicate`` holds for it."""
    def check():
        history = stack.history(CUSTOMER)
        return history if predicate(history) else None

    return wait_for(check, timeout_s=timeout_s)


def test_takeover_silences_the_ai_an_operator_message_is_sent_and_handback_answers_what_waited(stack):
    # Given a customer who was answered by the AI
    stack.post(text_body("wamid.TO1", "my lamp is broken"))
    stack.wait_for_sends(1)
    stack.wait_idle()

    # When an operator takes over (the operator API needs its token)
    assert stack.operator("POST", f"{CUSTOMER}/takeover", token="wrong").status_code == 401
    assert stack.operator("POST", f"{CUSTOMER}/takeover", {"operator_id": "rita"}).status_code == 202
    _wait_history(stack, lambda h: h["operator_active"])

    # Then the customer's next message is stored, not answered nor marked read
    stack.post(text_body("wamid.TO2", "hello??"))
    _wait_history(stack, lambda h: any(m["wamid"] == "wamid.TO2" for m in h["messages"]))
    stack.wait_idle()
    assert len(stack.sends()) == 1
    assert [r["message_id"] for r in stack.reads()] == ["wamid.TO1"]

    # When the operator writes, WhatsApp sends it, and it is the operator's in the history
    answer = stack.operator("POST", f"{CUSTOMER}/messages", {"text": "Rita here: a new one ships today.",
                                                             "operator_id": "rita"})
    assert answer.status_code == 202
    message_id = answer.json()["message_id"]
    _, operator_send = stack.wait_for_sends(2)
    assert operator_send["to"] == CUSTOMER
    assert operator_send["text"]["body"] == "Rita here: a new one ships today."
    assert operator_send["biz_opaque_callback_data"] == f"operator:{message_id}"
    history = _wait_history(stack, lambda h: any(m["author"] == "operator" and m["status"] == "sent"
                                                 for m in h["messages"]))
    (operator_row,) = [m for m in history["messages"] if m["author"] == "operator"]
    assert (operator_row["text"], operator_row["wamid"]) == ("Rita here: a new one ships today.",
                                                             operator_send["wamid"])

    # And the customer writes again while the operator still holds the conversation
    stack.post(text_body("wamid.TO3", "which colour will it be?"))
    _wait_history(stack, lambda h: any(m["wamid"] == "wamid.TO3" for m in h["messages"]))
    stack.wait_idle()
    assert len(stack.sends()) == 2

    # When the operator hands back
    assert stack.operator("POST", f"{CUSTOMER}/handback", {"operator_id": "rita"}).status_code == 202

    # Then the AI answers the message that waited, once
    _, _, handback_reply = stack.wait_for_sends(3)
    stack.wait_idle()
    assert len(stack.sends()) == 3
    assert handback_reply["text"]["body"] == OFFLINE + "which colour will it be?"
    assert not stack.history(CUSTOMER)["operator_active"]

    # And the model had the operator's turn in view: the thread the answer was written from
    checkpoints = open_checkpoints(stack.env["DB_URL"])
    try:
        messages = ConversationGraph(checkpoints.saver, OfflineModel()).messages(CUSTOMER)
    finally:
        checkpoints.close()
    turns = [(t.role, t.text) for t in to_turns(messages[:-1])]
    assert turns == [
        ("user", "my lamp is broken"),
        ("model", OFFLINE + "my lamp is broken"),
        ("user", "hello??"),
        ("model", "[human operator] Rita here: a new one ships today."),
        ("user", "which colour will it be?"),
    ]
    assert messages[-1].content == handback_reply["text"]["body"]


def _send_attempts(stack) -> list[int]:
    return [r["response"]["status"] for r in stack.whatsapp.requests() if r["kind"] == "send"]


def test_whatsapp_throttling_is_retried_and_the_customer_gets_one_reply(stack):
    # Given WhatsApp throttles the next two sends (131056 comes back as HTTP 400)
    stack.whatsapp.fail(code=131056, http_status=400, times=2)

    # When the customer writes
    stack.post(raw("text.json"))

    # Then the task retries (the stack's retry delays are 0.5 and 1 s) and one reply gets through
    (reply,) = stack.wait_for_sends(1)
    stack.wait_idle()
    assert _send_attempts(stack) == [400, 400, 200]
    assert [(m["author"], m["status"], m["wamid"]) for m in stack.history(CUSTOMER)["messages"]][1:] == [
        ("ai", "sent", reply["wamid"])]
    assert stack.dead_letters() == []


def test_a_permanent_whatsapp_error_is_recorded_on_the_reply_and_not_retried(stack):
    # Given the customer is outside the 24 h window (131047)
    stack.whatsapp.fail(code=131047, http_status=400)

    # When they write (a template would be needed to reach them)
    stack.post(raw("text.json"))
    wait_for(lambda: _send_attempts(stack), timeout_s=60)
    stack.wait_idle()

    # Then the one attempt's error is on the reply, and nothing is retried or dead-lettered
    assert _send_attempts(stack) == [400]
    (ai,) = [m for m in stack.history(CUSTOMER)["messages"] if m["author"] == "ai"]
    # (the title is Meta's error.message: "(#131047) Re-engagement message")
    assert (ai["status"], ai["error_code"]) == ("failed", 131047)
    assert "Re-engagement message" in ai["error_title"]
    assert stack.dead_letters() == []
