"""POST /webhook with bad parts: the good ones are stored, the body is recorded once
with every bad part's place and reason, and a signed body is never answered 5xx."""

from __future__ import annotations

import json

import pytest

from app.buffer import claim_batch
from app.web.rejected import MAX_LISTED_PROBLEMS, rejected_bodies
from tests.support.fixtures import raw, text_json, value_of
from tests.web.test_webhook import post

GOOD_TEXT = "Does it come in another color?"
GOOD_WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
CUSTOMER = "16505551234"
VALUE = "entry[0].changes[0].value"


def bad_entry(body):
    body["entry"].append(["not", "an", "entry"])


def bad_change(body):
    body["entry"][0]["changes"].append({"field": "messages", "value": "not an object"})


def messages_not_a_list(body):
    body["entry"].append({"id": "2", "changes": [{"field": "messages", "value": {"messages": {"id": "wamid.X"}}}]})


def message_missing_fields(body):
    value_of(body)["messages"].append({"id": "wamid.NO-TYPE", "from": "447700900123"})


SIBLINGS = [
    (bad_entry, "entry[1]", "an entry must be an object, got a list"),
    (bad_change, f"{VALUE.replace('changes[0]', 'changes[1]')}", "must be an object, got a string"),
    (messages_not_a_list, "entry[1].changes[0].value.messages", "must be a list, got an object"),
    (message_missing_fields, f"{VALUE}.messages[1]", "message wamid.NO-TYPE has no type"),
]


@pytest.mark.parametrize("mutate, where, reason", SIBLINGS, ids=[s[0].__name__ for s in SIBLINGS])
def test_a_good_message_next_to_a_malformed_sibling_is_buffered_and_the_sibling_recorded(
        client, enqueue, redis_client, mutate, where, reason):
    # Given a signed body with one good text message and one malformed part
    body = text_json()
    mutate(body)
    data = json.dumps(body).encode()

    # When Meta posts it
    result = post(client, data)

    # Then it is answered 200, and the good message is buffered with its check scheduled
    assert result.status_code == 200
    assert (result.json["status"], result.json["messages"], result.json["problems"]) == ("ok", 1, 1)
    assert enqueue.calls == [("check_buffer_task", (CUSTOMER, 1), None, {"countdown": 3.0})]
    batch = claim_batch(redis_client, CUSTOMER, 1, max_wait_ms=15_000)
    assert [(m["wamid"], m["text"]) for m in batch.messages] == [(GOOD_WAMID, GOOD_TEXT)]

    # And the body is recorded once, with where the bad part is and why
    [record] = rejected_bodies(redis_client)
    assert record["partial"] is True and record["problem_count"] == 1
    assert record["problems"] == [{"where": where, "reason": reason}]
    assert f"{where}: {reason}" in record["error"] and record["raw"] == data.decode()


def test_a_good_status_next_to_a_bad_one_is_enqueued(client, enqueue, redis_client):
    body = json.loads(raw("status_sent.json"))
    statuses = value_of(body)["statuses"]
    statuses.insert(0, {"id": "wamid.OUT", "status": "read", "timestamp": float("inf")})
    result = post(client, json.dumps(body).encode())
    assert result.status_code == 200 and (result.json["statuses"], result.json["problems"]) == (1, 1)
    [call] = enqueue.named("update_message_status_task")
    assert call[1][0]["status"] == "sent"
    [record] = rejected_bodies(redis_client)
    assert record["problems"] == [{"where": f"{VALUE}.statuses[0]",
                                   "reason": "status.timestamp must be seconds, got inf"}]


@pytest.mark.parametrize("data", [b"[" * 200_000, b'{"a": ' * 200_000,
                                  b'{"object": "whatsapp_business_account", "entry": [' + b"[" * 200_000])
def test_a_deeply_nested_body_is_200_and_recorded(client, enqueue, redis_client, data):
    result = post(client, data)
    assert result.status_code == 200 and result.json["status"] == "rejected"
    assert "nested too deeply" in result.json["reason"]
    [record] = rejected_bodies(redis_client)
    assert "nested too deeply" in record["error"] and record["partial"] is False
    assert record["size_bytes"] == len(data)
    assert enqueue.calls == []


def test_a_body_with_nothing_usable_is_rejected_and_recorded_once_with_its_problems(client, enqueue, redis_client):
    body = text_json()
    body["entry"] = ["a", {"changes": [7]}]
    data = json.dumps(body).encode()
    for _ in range(2):  # (Meta does not resend a 200, but a retried body is one record)
        result = post(client, data)
        assert result.status_code == 200 and result.json["status"] == "rejected"
    assert result.json["reason"] == ("entry[0]: an entry must be an object, got a string; "
                                     "entry[1].changes[0]: a change must be an object, got a number")
    [record] = rejected_bodies(redis_client)
    assert record["partial"] is False and record["problem_count"] == 2
    assert [p["where"] for p in record["problems"]] == ["entry[0]", "entry[1].changes[0]"]
    assert enqueue.calls == []


def test_a_body_with_many_bad_parts_is_one_bounded_record(client, enqueue, redis_client):
    body = text_json()
    value_of(body)["messages"] += [{"id": f"wamid.BAD{n}"} for n in range(500)]
    result = post(client, json.dumps(body).encode())
    assert result.status_code == 200 and (result.json["messages"], result.json["problems"]) == (1, 500)
    [record] = rejected_bodies(redis_client)
    assert record["problem_count"] == 500 and len(record["problems"]) == MAX_LISTED_PROBLEMS
    assert record["error"].endswith("; and 490 more") and len(record["error"]) < 4096
    assert len(enqueue.named("check_buffer_task")) == 1


# What Meta never sends but a signed body can hold: never a 5xx.

def odd_sender(body):
    value_of(body)["messages"].append({"id": "wamid.SURROGATE", "type": "text", "timestamp": "1",
                                       "from": "\ud800"})


def odd_reason(body):
    value_of(body)["messages"].append({"id": "wamid.\udfff" + "x" * 10_000, "from": "447700900123"})


def odd_error(body):
    value_of(body)["errors"] = [{"code": "\ud800", "title": {"a": [1]}, "message": "\udfff"}]


def odd_numbers(body):
    value_of(body)["messages"].append({"id": "wamid.NAN", "type": "text", "timestamp": float("nan"),
                                       "from": "447700900123"})
    value_of(body)["statuses"] = [{"id": "wamid.OUT", "status": "read", "timestamp": 10**40}]


@pytest.mark.parametrize("mutate", [odd_sender, odd_reason, odd_error, odd_numbers],
                         ids=lambda f: f.__name__)
def test_odd_values_next_to_a_good_message_are_recorded_not_answered_5xx(client, enqueue, redis_client, mutate):
    body = text_json()
    mutate(body)
    result = post(client, json.dumps(body).encode())
    assert result.status_code == 200 and result.json["messages"] == 1
    assert enqueue.named("check_buffer_task") == [("check_buffer_task", (CUSTOMER, 1), None, {"countdown": 3.0})]
    [record] = rejected_bodies(redis_client)
    assert record["partial"] is True and record["problems"]
    json.dumps(record, ensure_ascii=False).encode("utf-8")


def test_a_parser_bug_is_recorded_with_a_200_not_a_500(client, enqueue, redis_client, monkeypatch, caplog):
    def broken(raw_body):
        raise TypeError("a bug")

    monkeypatch.setattr("app.web.webhook.parse_body", broken)
    result = post(client, raw("text.json"))
    assert result.status_code == 200 and result.json["status"] == "rejected"
    [record] = rejected_bodies(redis_client)
    assert "the parser failed on this body (TypeError)" in record["error"]
    assert "a bug" in caplog.text and enqueue.calls == []
