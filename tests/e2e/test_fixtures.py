"""Every fixture of ../shared/fixtures/whatsapp, posted signed to a running stack,
ends as the fixtures' README says.

The stack is gunicorn (wsgi:app) and ``dramatiq actors`` as subprocesses
on real Redis and PostgreSQL, sending to the WhatsApp stand-in, with the
offline model, which answers "Thanks for your message! You said: <the
customer's last turn>": the reply shows what the model was given.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db import Message
from app.db.models import Conversation, MessageStatus, OutboxEntry
from app.web.webhook import ERROR_COUNTS_KEY
from tests.support.fixtures import (
    ANSWERED,
    CUSTOMER,
    FAILED_WAMID,
    FIXTURES,
    OFFLINE,
    QUOTED,
    STATUS_WAMID,
    raw,
)
from tests.support.stack import VERIFY_TOKEN
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

def _wait_stored(stack, key: str) -> dict:
    """The conversation's history once its messages are stored and the tasks are done."""
    wait_for(lambda: stack.operator("GET", key).status_code == 200, timeout_s=60)
    stack.wait_idle()
    return stack.history(key)


def _customer_messages(db, key: str) -> list[Message]:
    with db() as session:
        conversation = session.scalars(select(Conversation).where(Conversation.customer_key == key)).one()
        return list(session.scalars(select(Message).where(Message.conversation_id == conversation.id,
                                                          Message.author == "customer").order_by(Message.id)))


@pytest.mark.parametrize("fixture", sorted(ANSWERED))
def test_a_message_fixture_gets_one_reply_that_shows_what_the_model_saw(stack, db, fixture):
    kind, seen = ANSWERED[fixture]
    # When Meta posts the fixture's raw bytes, signed
    response = stack.post(raw(fixture))
    assert response.status_code == 200, response.text
    assert response.json()["messages"] == 1

    # Then the customer gets one reply, to their number, written from the description
    (reply,) = stack.wait_for_sends(1)
    stack.wait_idle()
    assert len(stack.sends()) == 1
    assert reply["to"] == CUSTOMER and "recipient" not in reply
    assert reply["text"]["body"] == OFFLINE + seen
    # (read, with a typing indicator, before the answer)
    (read,) = stack.reads()
    assert read["typing_indicator"] == {"type": "text"}

    # And the history holds the customer's message and the AI's reply with its wamid
    history = stack.history(CUSTOMER)
    assert [(m["author"], m["kind"], m["text"]) for m in history["messages"]] == [
        ("customer", kind, seen), ("ai", "text", OFFLINE + seen)]
    assert history["messages"][1]["wamid"] == reply["wamid"]
    assert history["messages"][1]["status"] == "sent"
    assert read["message_id"] == history["messages"][0]["wamid"]
    # (the send carries its batch's outbox key, which Meta echoes in the statuses)
    with db() as session:
        (entry,) = session.scalars(select(OutboxEntry)).all()
    assert (entry.key, entry.state, entry.wamid) == (reply["biz_opaque_callback_data"], "sent", reply["wamid"])
    assert stack.dead_letters() == []


@pytest.mark.parametrize("fixture", ["reply_to_message.json", "interactive_button_reply.json",
                                     "template_button.json"])
def test_a_reply_quoting_a_message_keeps_the_quoted_id(stack, db, fixture):
    stack.post(raw(fixture))
    stack.wait_for_sends(1)
    stack.wait_idle()
    (message,) = _customer_messages(db, CUSTOMER)
    assert message.context_id == QUOTED


@pytest.mark.parametrize("fixture, emoji", [("reaction.json", "👍"), ("reaction_removed.json", "")])
def test_a_reaction_is_stored_and_not_answered(stack, db, fixture, emoji):
    # When Meta posts a reaction (or its removal)
    assert stack.post(raw(fixture)).status_code == 200

    # Then it is stored with its emoji and the message it reacts to
    _wait_stored(stack, CUSTOMER)
    (message,) = _customer_messages(db, CUSTOMER)
    assert (message.kind, message.emoji, message.reaction_to, message.answerable) == ("reaction", emoji, QUOTED,
                                                                                      False)
    # And nobody answers it, nor marks it read
    assert stack.sends() == [] and stack.reads() == []
    assert stack.dead_letters() == []


def test_a_system_message_updates_the_customers_number_and_is_not_answered(stack, db):
    assert stack.post(raw("system_user_changed_number.json")).status_code == 200

    history = _wait_stored(stack, CUSTOMER)
    assert history["wa_id"] == "16505559876"
    assert [(m["author"], m["kind"]) for m in history["messages"]] == [("customer", "system")]
    assert stack.sends() == [] and stack.reads() == []


def test_a_username_only_customer_is_keyed_by_user_id_and_answered_as_recipient(stack):
    user_id = "BR.70021933458812006655"
    assert stack.post(raw("username_only.json")).status_code == 200

    (reply,) = stack.wait_for_sends(1)
    stack.wait_idle()
    assert reply["recipient"] == user_id and "to" not in reply
    assert reply["text"]["body"] == OFFLINE + "hello, do you ship to Brazil?"
    history = stack.history(user_id)
    assert (history["wa_id"], history["user_id"]) == (None, user_id)
    assert len(stack.sends()) == 1


def test_multi_message_makes_two_conversations_and_answers_the_first_ones_two_messages_in_one_call(stack):
    response = stack.post(raw("multi_message.json"))
    assert response.json()["messages"] == 3

    replies = stack.wait_for_sends(2)
    stack.wait_idle()
    assert len(stack.sends()) == 2
    by_customer = {r["to"]: r["text"]["body"] for r in replies}
    # The offline model echoes the customer's last turn: both messages, in order, in one turn
    assert by_customer == {CUSTOMER: OFFLINE + "Hi! I ordered a lamp last week",
                           "447700900123": OFFLINE + "Is the shop open on Sunday?"}
    assert [m["text"] for m in stack.history(CUSTOMER)["messages"]] == [
        "Hi!", "I ordered a lamp last week", OFFLINE + "Hi! I ordered a lamp last week"]
    assert len(stack.history("447700900123")["messages"]) == 2


def _reply_sent_as(stack, wamid: str) -> dict:
    """Have the customer write (text.json) and the reply be sent under ``wamid``."""
    stack.whatsapp.use_ids([wamid])
    assert stack.post(raw("text.json")).status_code == 200
    (reply,) = stack.wait_for_sends(1)
    stack.wait_idle()
    assert reply["wamid"] == wamid
    return reply


def _reply_status(stack) -> dict:
    return [m for m in stack.history(CUSTOMER)["messages"] if m["author"] == "ai"][0]


def _post_statuses(stack, *fixtures: str) -> None:
    for fixture in fixtures:
        response = stack.post(raw(fixture))
        assert response.status_code == 200 and response.json()["statuses"] >= 1
    stack.wait_idle()


def test_statuses_sent_delivered_read_move_forward_only(stack, db):
    _reply_sent_as(stack, STATUS_WAMID)
    _post_statuses(stack, "status_sent.json", "status_delivered.json")
    assert _reply_status(stack)["status"] == "delivered"
    _post_statuses(stack, "status_read.json")
    assert _reply_status(stack)["status"] == "read"
    # A late delivered or sent (Meta does not order them) does not move it back
    _post_statuses(stack, "status_delivered.json", "status_sent.json")
    assert _reply_status(stack)["status"] == "read"
    with db() as session:
        # Every status is kept (their order is the workers', not Meta's)
        assert sorted(session.scalars(select(MessageStatus.status)
                                      .where(MessageStatus.wamid == STATUS_WAMID)).all()) == [
            "delivered", "delivered", "read", "sent", "sent"]


def test_statuses_read_delivered_sent_in_one_body_end_as_read(stack):
    _reply_sent_as(stack, STATUS_WAMID)
    _post_statuses(stack, "status_out_of_order.json")
    assert _reply_status(stack)["status"] == "read"


def test_a_failed_status_keeps_metas_code_and_title(stack):
    _reply_sent_as(stack, FAILED_WAMID)
    _post_statuses(stack, "status_failed.json")
    reply = _reply_status(stack)
    assert (reply["status"], reply["error_code"], reply["error_title"]) == ("failed", 131047,
                                                                             "Re-engagement message")


def test_a_status_that_comes_before_its_message_is_applied_when_the_message_appears(stack, db):
    # Given Meta reports "read" for a message not stored yet
    _post_statuses(stack, "status_read.json")
    with db() as session:
        assert session.scalars(select(MessageStatus.status).where(MessageStatus.wamid == STATUS_WAMID)).all() == [
            "read"]
    # When the reply with that wamid is sent and stored
    _reply_sent_as(stack, STATUS_WAMID)
    # Then it is read already
    assert _reply_status(stack)["status"] == "read"


def test_system_level_errors_are_answered_200_and_counted(stack):
    for expected in (1, 2):
        response = stack.post(raw("errors_system_level.json"))
        assert response.status_code == 200
        assert response.json()["errors"] == 1
        assert stack.redis.hget(ERROR_COUNTS_KEY, "131000") == str(expected).encode()
    assert "WhatsApp reported a system-level error 131000 (Something went wrong)" in stack.logs()
    stack.wait_idle()
    assert stack.sends() == []


def test_the_verification_handshake_echoes_the_challenge_and_refuses_a_wrong_token(stack):
    spec = json.loads((FIXTURES / "verification.json").read_text())
    query = dict(spec["query"], **{"hub.verify_token": VERIFY_TOKEN})
    response = stack.http.get(spec["path"], params=query)
    assert response.status_code == spec["expect"]["status"]
    assert response.headers["content-type"].startswith(spec["expect"]["content_type"])
    assert response.text == spec["expect"]["body"]
    wrong = stack.http.get(spec["path"], params=dict(query, **{"hub.verify_token": "not-the-token"}))
    assert wrong.status_code == spec["wrong_token_expect"]["status"]


def test_every_fixture_has_its_end_to_end_test_here():
    # Every fixture file is named by some other test of this module (or is one of ANSWERED)
    tree = ast.parse(Path(__file__).read_text())
    named = {
        node.value
        for function in tree.body
        if isinstance(function, ast.FunctionDef) and function.name.startswith("test_")
        and function.name != "test_every_fixture_has_its_end_to_end_test_here"
        for node in ast.walk(function)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".json")
    }
    assert set(ANSWERED) | named == {p.name for p in FIXTURES.glob("*.json")}
