"""What the webhook of the running stack does with bodies that are not what it
expects: bad signatures, bodies that are not JSON or hold a bad message,
unknown fields, a body over the cap (same stack as test_fixtures.py)."""

from __future__ import annotations

import json

import pytest

from app.web.rejected import rejected_bodies
from tests.support.fixtures import OFFLINE, raw, sign, text_body
from tests.support.stack import VERIFY_TOKEN
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def test_a_body_with_a_bad_or_missing_signature_is_refused_with_401(stack):
    body = raw("text.json")
    assert stack.post(body, signature=sign(body, "another-secret")).status_code == 401
    assert stack.post(body, signature="").status_code == 401
    # (one byte changed after signing: Meta's escaped bytes are what is signed)
    assert stack.post(body.replace(b"color", b"colour"), signature=sign(body)).status_code == 401
    stack.wait_idle()
    assert stack.sends() == [] and stack.redis.keys("app:*") == []


def test_the_access_log_shows_the_handshake_without_its_verify_token(stack):
    # gunicorn picks up the project's gunicorn.conf.py: the path is logged, never the query
    response = stack.http.get("/webhook", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                                                  "hub.challenge": "1158201444"})
    assert response.status_code == 200 and response.text == "1158201444"
    wait_for(lambda: '"GET /webhook HTTP/1.1" 200' in stack.logs())
    assert VERIFY_TOKEN not in stack.logs()


def test_a_signed_body_that_is_not_json_is_answered_200_and_recorded_with_its_reason(stack):
    body = b'{"object": "whatsapp_business_account", "entry": [oops'
    response = stack.post(body)
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    (record,) = rejected_bodies(stack.redis)
    assert "not valid JSON" in record["error"]
    assert record["raw"] == body.decode()
    stack.wait_idle()
    assert stack.sends() == []


def test_a_body_with_one_bad_message_answers_the_good_one_and_records_the_bad_one(stack):
    # Given a signed body whose second message has no id
    body = json.loads(text_body("wamid.GOOD", "the good one"))
    messages = body["entry"][0]["changes"][0]["value"]["messages"]
    messages.append({k: v for k, v in dict(messages[0], text={"body": "no id"}).items() if k != "id"})
    data = json.dumps(body).encode()

    # Then it is answered 200, the good message is answered, the bad one recorded with its reason
    answer = stack.post(data).json()
    assert (answer["messages"], answer["problems"]) == (1, 1)
    (reply,) = stack.wait_for_sends(1)
    assert reply["text"]["body"] == OFFLINE + "the good one"
    (record,) = rejected_bodies(stack.redis)
    assert "messages[1]: the message has no id" in record["error"]


def test_unknown_fields_are_ignored_and_a_3_mb_body_is_legitimate(stack):
    # Given a text message in a body with fields the parser does not know, 3 MB in all
    body = json.loads(raw("text.json"))
    value = body["entry"][0]["changes"][0]["value"]
    value["messages"][0]["future_field"] = {"nested": [1, 2, 3]}
    value["unknown_list"] = ["x" * 1000] * 3000
    body["also_new"] = True
    data = json.dumps(body).encode()
    assert len(data) > 3_000_000

    # Then it is answered as the plain text would be
    assert stack.post(data).json()["messages"] == 1
    (reply,) = stack.wait_for_sends(1)
    assert reply["text"]["body"] == OFFLINE + "Does it come in another color?"


def test_a_body_over_the_cap_is_refused_with_413(stack):
    body = text_body("wamid.BIG", "big", padding="x" * (4 * 1024 * 1024))
    assert len(body) > 4 * 1024 * 1024
    assert stack.post(body).status_code == 413
    stack.wait_idle()
    assert stack.sends() == []


def _chunked(data: bytes, size: int = 64 * 1024):
    """``data`` as an iterator, which httpx sends chunked, with no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_a_chunked_body_is_read_from_gunicorns_stream_and_answered(stack):
    body = raw("text.json")
    response = stack.http.post("/webhook", content=_chunked(body, 50),
                               headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)})
    assert response.status_code == 200 and response.json()["messages"] == 1
    (reply,) = stack.wait_for_sends(1)
    assert reply["text"]["body"] == OFFLINE + "Does it come in another color?"


def test_a_chunked_body_over_the_cap_is_refused_with_413(stack):
    body = text_body("wamid.BIGCHUNKED", "big", padding="x" * (4 * 1024 * 1024))
    response = stack.http.post("/webhook", content=_chunked(body),
                               headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)})
    assert response.status_code == 413
    stack.wait_idle()
    assert stack.sends() == []
