"""The operator API: bearer token, validation, enqueued tasks and the history read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.db import Conversation, Message, session_scope
from tests.web.conftest import OPERATOR_TOKEN

AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
BASE = "/operator/conversations/16505551234"


@pytest.fixture
def conversation(db):
    """The customer's conversation the routes act on."""
    with session_scope(db) as session:
        session.add(Conversation(customer_key="16505551234", wa_id="16505551234"))


def post(client, path, body=None, headers=AUTH):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return client.simulate_post(path, body=data, headers=headers)


@pytest.mark.parametrize("method, path", [("POST", "/takeover"), ("POST", "/handback"), ("POST", "/messages"),
                                          ("GET", "")])
@pytest.mark.parametrize("headers, description", [
    ({}, "send Authorization: Bearer"),
    ({"Authorization": "Bearer wrong"}, "not the operator token"),
    ({"Authorization": f"Basic {OPERATOR_TOKEN}"}, "send Authorization: Bearer"),
])
def test_every_route_needs_the_operator_token(client, enqueue, method, path, headers, description):
    result = client.simulate_request(method, BASE + path, body=b'{"text": "hi"}', headers=headers)
    assert result.status_code == 401 and description in result.json["description"]
    assert result.headers["www-authenticate"] == "Bearer"
    assert enqueue.calls == []


def test_without_an_operator_token_configured_every_call_is_401(make_client, enqueue):
    result = post(make_client(operator_token=None), BASE + "/takeover")
    assert result.status_code == 401 and result.json["description"] == "OPERATOR_TOKEN is not configured"
    assert enqueue.calls == []


@pytest.mark.parametrize("action", ["takeover", "handback"])
def test_takeover_and_handback_enqueue_the_state_task(client, enqueue, conversation, action):
    result = post(client, f"{BASE}/{action}", {"operator_id": "agent-7"})
    assert result.status_code == 202
    assert result.json == {"conversation": "16505551234", "action": action, "operator_id": "agent-7"}
    assert enqueue.calls == [("update_langgraph_state_task", ("16505551234", action, "agent-7"), None, {})]


def test_takeover_needs_no_body(client, enqueue, conversation):
    assert post(client, f"{BASE}/takeover").status_code == 202
    assert enqueue.calls == [("update_langgraph_state_task", ("16505551234", "takeover", None), None, {})]


def test_an_operator_message_gets_a_fresh_id_and_is_enqueued_to_be_sent(client, enqueue, conversation):
    first = post(client, f"{BASE}/messages", {"text": "Hi, this is Ana from support.", "operator_id": "ana"})
    second = post(client, f"{BASE}/messages", {"text": "Your lamp ships today."})
    assert (first.status_code, second.status_code) == (202, 202)
    assert (first.json["message_id"], second.json["message_id"]) == ("uuid-1", "uuid-2")
    assert enqueue.calls == [
        ("sync_operator_message_to_graph_task", ("16505551234", "Hi, this is Ana from support.", "uuid-1"),
         {"operator_id": "ana", "send": True}, {}),
        ("sync_operator_message_to_graph_task", ("16505551234", "Your lamp ships today.", "uuid-2"),
         {"operator_id": None, "send": True}, {}),
    ]


@pytest.mark.parametrize("body, description", [
    (None, "a JSON object body is required"),
    (b"{oops", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    ({"text": ""}, "text must be a non-empty string"),
    ({"text": 5}, "text must be a non-empty string"),
    ({"text": "x" * 4097}, "at most 4096 characters"),
    ({"text": "hi", "operator_id": 3}, "operator_id must be a string"),
    ({"text": "hi", "sender": "me"}, "unknown field(s): sender"),
    # (accepted with a 202, the task then failed: PostgreSQL refuses NUL, Redis and PostgreSQL a lone surrogate)
    ({"text": "a\x00b"}, "text must not hold a NUL character"),
    ({"text": "hi \ud800"}, "text must be valid Unicode text"),
    ({"text": "hi", "operator_id": "op\x00"}, "operator_id must not hold a NUL character"),
])
def test_a_bad_message_body_is_400_with_its_reason(client, enqueue, body, description):
    result = post(client, f"{BASE}/messages", body)
    assert result.status_code == 400 and description in result.json["description"]
    assert enqueue.calls == []


def test_a_bad_takeover_body_or_key_is_400(client, enqueue):
    assert post(client, f"{BASE}/takeover", {"operator": "x"}).status_code == 400
    assert post(client, f"/operator/conversations/{'9' * 129}/takeover").status_code == 400
    # (a NUL in the key failed its look-up in PostgreSQL: a 503 "database unavailable", to retry forever)
    result = post(client, "/operator/conversations/1650%005551234/takeover")
    assert result.status_code == 400 and "NUL" in result.json["description"]
    assert client.simulate_get("/operator/conversations/1650%005551234", headers=AUTH).status_code == 400
    assert enqueue.calls == []


def test_a_queue_that_is_down_is_503(client, enqueue, conversation):
    enqueue.fail_on.add("update_langgraph_state_task")
    assert post(client, f"{BASE}/takeover").status_code == 503


def test_the_history_comes_from_the_database(client, db):
    with session_scope(db) as session:
        conversation = Conversation(customer_key="16505551234", wa_id="16505551234", operator_active=True,
                                    operator_id="ana")
        session.add(conversation)
        session.flush()
        at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        session.add_all([
            Message(conversation_id=conversation.id, author="customer", wamid="wamid.in1", text="Hi!",
                    status="read", created_at=at),
            Message(conversation_id=conversation.id, author="operator", wamid="operator:1", text="Hello, Ana here.",
                    status="sent", created_at=at),
        ])
    result = client.simulate_get(BASE, headers=AUTH)
    assert result.status_code == 200
    assert result.json["operator_active"] is True and result.json["operator_id"] == "ana"
    assert [(m["author"], m["text"], m["wamid"], m["status"]) for m in result.json["messages"]] == [
        ("customer", "Hi!", "wamid.in1", "read"), ("operator", "Hello, Ana here.", "operator:1", "sent")]
    assert result.json["messages"][0]["created_at"] == "2026-01-02T03:04:05+00:00"
    # And ?limit keeps the latest messages
    latest = client.simulate_get(BASE, headers=AUTH, params={"limit": "1"}).json["messages"]
    assert [m["text"] for m in latest] == ["Hello, Ana here."]


def test_an_unknown_conversation_is_404(client, db):
    result = client.simulate_get("/operator/conversations/nobody", headers=AUTH)
    assert result.status_code == 404 and "nobody" in result.json["description"]


def test_a_bad_limit_is_400(client, db):
    assert client.simulate_get(BASE, headers=AUTH, params={"limit": "0"}).status_code == 400


def test_a_retried_operator_post_with_its_message_id_sends_once(client, enqueue, services, whatsapp, db):
    from app.operator import sync_operator_message

    # Given a customer's conversation
    with session_scope(db) as session:
        session.add(Conversation(customer_key="16505551234", wa_id="16505551234", operator_active=True))
    # When the operator's client posts a message, and posts it again (it saw a timeout)
    body = {"text": "Your lamp ships today.", "message_id": "ticket-42.msg-1"}
    first, second = post(client, f"{BASE}/messages", body), post(client, f"{BASE}/messages", body)

    # Then both are accepted under one id, namespaced by the conversation
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json["message_id"] == second.json["message_id"] == "client:16505551234:ticket-42.msg-1"
    # And when both tasks run, the customer gets the message once
    for _task, args, kwargs, _options in enqueue.named("sync_operator_message_to_graph_task"):
        conversation, text, message_id = args
        sync_operator_message(services, conversation, text, message_id=message_id, **kwargs)
    assert [s.text for s in whatsapp.sent] == ["Your lamp ships today."]


@pytest.mark.parametrize("message_id", ["", "x" * 101, "has space", "ümlaut", 7, "a/b"])
def test_a_bad_client_message_id_is_400(client, enqueue, message_id):
    result = post(client, f"{BASE}/messages", {"text": "hi", "message_id": message_id})
    assert result.status_code == 400 and "message_id must be 1 to 100 characters" in result.json["description"]
    assert enqueue.calls == []


@pytest.mark.parametrize("path, body", [("/takeover", None), ("/handback", None), ("/messages", {"text": "hi"})])
def test_a_write_to_an_unknown_conversation_is_404_and_creates_nothing(client, enqueue, db, path, body):
    result = post(client, f"/operator/conversations/nobody{path}", body)
    assert result.status_code == 404 and "nobody" in result.json["description"]
    assert enqueue.calls == []
    with db() as session:
        assert session.scalars(select(Conversation)).all() == []


def test_every_route_finds_a_conversation_by_any_id_of_its_customer(client, enqueue, db):
    from app.customers import get_or_create_conversation

    # Given a customer who first wrote with a username only, then with a phone number
    with session_scope(db) as session:
        get_or_create_conversation(session, "US.7781", user_id="US.7781")
    with session_scope(db) as session:
        get_or_create_conversation(session, "16505550000", wa_id="16505550000", user_id="US.7781")
    other_id = "/operator/conversations/16505550000"

    # When the operator names it by the phone number, Then every route acts on that one conversation
    assert client.simulate_get(other_id, headers=AUTH).json["conversation"] == "US.7781"
    assert post(client, f"{other_id}/takeover").json["conversation"] == "US.7781"
    assert post(client, f"{other_id}/messages", {"text": "hi", "message_id": "m1"}).status_code == 202
    assert post(client, f"{other_id}/handback").status_code == 202
    assert [(c[0], c[1][0]) for c in enqueue.calls] == [
        ("update_langgraph_state_task", "US.7781"), ("sync_operator_message_to_graph_task", "US.7781"),
        ("update_langgraph_state_task", "US.7781")]
    assert enqueue.calls[1][1][2] == "client:US.7781:m1"
