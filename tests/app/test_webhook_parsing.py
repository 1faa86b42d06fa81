"""Every fixture body parsed into the dicts the tasks consume."""

from __future__ import annotations

import json

import pytest

from app.inbound import MESSAGE_KEYS
from app.status import StatusUpdate
from app.webhook import Problem, WebhookFormatError, conversation_key, parse_body, parse_notification
from tests.support.fixtures import FIXTURES, raw

SHEENA = {"wa_id": "16505551234", "user_id": "US.13491208655302741918", "profile_name": "Sheena Nelson"}
QUOTED = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"


def message(**fields):
    base = dict.fromkeys(MESSAGE_KEYS)
    base.update(answerable=True, **SHEENA)
    base.update(fields)
    return base


EXPECTED = {
    "text.json": [message(wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=", kind="text",
                          text="Does it come in another color?", timestamp=1749416383)],
    "text_non_ascii.json": [message(wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQ5QjFDRTc3MEQ2QUQwQkJFMkIA", kind="text",
                                    text="Olá! Vocês entregam em São Paulo? \U0001f69a", timestamp=1749416385)],
    "image_caption.json": [message(wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRJTUFHRTAwMDAwMDAwMDAwMDAwAA==",
                                   kind="image", text="[image] The lamp arrived like this", timestamp=1749416403)],
    "document.json": [message(wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRET0NVTUVOVDAwMDAwMDAwMDAwAA==",
                              kind="document", text="[document invoice-4471.pdf] my invoice", timestamp=1749416413)],
    "voice_note.json": [message(wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRWT0lDRTAwMDAwMDAwMDAwMDAwAA==",
                                kind="voice", text="[voice note]", timestamp=1749416423)],
    "location.json": [message(wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRMT0NBVElPTjAwMDAwMDAwMDAwAA==", kind="location",
                              text="[location] Philz Coffee, 101 Forest Ave, Palo Alto, CA 94301 (37.4419, -122.143)",
                              timestamp=1749416433)],
    "contacts.json": [message(wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRDT05UQUNUUzAwMDAwMDAwMDAwAA==", kind="contacts",
                              text="[contacts] Chandler Bing", timestamp=1749416443)],
    "interactive_button_reply.json": [message(
        wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRCVVRUT05SRVBMWTAwMDAwMDAwAA==", kind="interactive",
        text="Track my order", timestamp=1749416453, context_id=QUOTED)],
    "interactive_list_reply.json": [message(
        wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRMSVNUUkVQTFkwMDAwMDAwMDAwAA==", kind="interactive", text="Medium",
        timestamp=1749416463, context_id=QUOTED)],
    "template_button.json": [message(
        wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRURU1QTEFURUJUTjAwMDAwMDAwAA==", kind="button",
        text="Reschedule delivery", timestamp=1749416473, context_id=QUOTED)],
    "reply_to_message.json": [message(
        wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRSRVBMWVRPMDAwMDAwMDAwMDAwAA==", kind="text", text="Yes, this one",
        timestamp=1749416493, context_id=QUOTED)],
    "reaction.json": [message(
        wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRSRUFDVElPTjAwMDAwMDAwMDAwAA==", kind="reaction",
        text="[reaction \U0001f44d]", answerable=False, timestamp=1749416483, reaction_to=QUOTED,
        emoji="\U0001f44d")],
    "reaction_removed.json": [message(
        wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRSRUFDVElPTlJFTU9WRUQwMDAwAA==", kind="reaction",
        text="[reaction removed]", answerable=False, timestamp=1749416484, reaction_to=QUOTED, emoji="")],
    "username_only.json": [message(
        wamid="wamid.HBgUQlIuNzAwMjE5MzM0NTg4MTIwMDY2NTUVAgASGBQ0RkE5QjE3QzBBRkYyMkQ5NEEA", kind="text",
        text="hello, do you ship to Brazil?", timestamp=1749416503, wa_id=None,
        user_id="BR.70021933458812006655", profile_name="quiet.fox")],
    "system_user_changed_number.json": [message(
        wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRTWVNURU0wMDAwMDAwMDAwMDAwAA==", kind="system",
        text="User Sheena Nelson changed from 16505551234 to 16505559876", answerable=False, timestamp=1749416513,
        user_id=None, profile_name=None, new_wa_id="16505559876")],
    "unsupported.json": [message(
        wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRVTlNVUFBPUlRFRDAwMDAwMDAwAA==", kind="unsupported",
        text="[unsupported message]", timestamp=1749416523)],
    "multi_message.json": [
        message(wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQxMTExMTExMTExMTExMTExMTExAA==", kind="text", text="Hi!",
                timestamp=1749416393),
        message(wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQyMjIyMjIyMjIyMjIyMjIyMjIyAA==", kind="text",
                text="I ordered a lamp last week", timestamp=1749416394),
        message(wamid="wamid.HBgMNDQ3NzAwOTAwMTIzFQIAEhgUMzMzMzMzMzMzMzMzMzMzMzMzMwA=", kind="text",
                text="Is the shop open on Sunday?", timestamp=1749416395, wa_id="447700900123",
                user_id="GB.88120045517730299101", profile_name="Raj Patel"),
    ],
}


def test_the_shipped_fixtures_are_the_shared_ones_byte_for_byte():
    # app/devtools/fixtures -> the project root -> its parent, where the team keeps shared/
    shared = FIXTURES.parents[3] / "shared" / "fixtures" / "whatsapp"
    if not shared.is_dir():
        pytest.skip(f"the team's shared fixtures ({shared}) are not on this machine")
    assert sorted(p.name for p in shared.glob("*.json")) == sorted(p.name for p in FIXTURES.glob("*.json"))
    for path in sorted(shared.glob("*.json")):
        assert raw(path.name) == path.read_bytes(), path.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_message_fixture_becomes_its_inbound_message_dicts(name):
    notification = parse_body(raw(name))
    assert notification.messages == EXPECTED[name]
    assert notification.statuses == [] and notification.errors == [] and notification.problems == []
    for parsed in notification.messages:
        assert list(parsed) == list(MESSAGE_KEYS)
        assert parsed["text"]


def test_the_conversation_key_is_the_wa_id_else_the_user_id():
    assert [conversation_key(m) for m in parse_body(raw("multi_message.json")).messages] == [
        "16505551234", "16505551234", "447700900123"]
    assert conversation_key(parse_body(raw("username_only.json")).messages[0]) == "BR.70021933458812006655"
    assert conversation_key(parse_body(raw("system_user_changed_number.json")).messages[0]) == "16505551234"


WAMID_OUT = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"


def test_statuses_become_the_dicts_the_status_task_accepts():
    [sent] = parse_body(raw("status_sent.json")).statuses
    assert sent == {"id": WAMID_OUT, "status": "sent", "timestamp": "1749416386", "recipient_id": "16505551234",
                    "biz_opaque_callback_data": "batch:3f9c2e"}
    # (the outbox key echoed back reaches the task: it proves a send a crash left unconfirmed)
    assert StatusUpdate.parse(sent) == StatusUpdate(WAMID_OUT, "sent", 1749416386, "16505551234",
                                                    callback_data="batch:3f9c2e")
    assert [s["status"] for s in parse_body(raw("status_delivered.json")).statuses] == ["delivered"]
    assert [s["status"] for s in parse_body(raw("status_read.json")).statuses] == ["read"]
    assert [s["status"] for s in parse_body(raw("status_out_of_order.json")).statuses] == ["read", "delivered", "sent"]


def test_a_status_without_a_timestamp_becomes_a_dict_the_status_task_accepts():
    # (it was passed on as None, which the task refused: a status answered 200 was dead-lettered)
    body = json.loads(raw("status_read.json"))
    del body["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"]
    [status] = parse_body(json.dumps(body).encode()).statuses
    assert StatusUpdate.parse(status).timestamp == 0


def test_a_failed_status_keeps_metas_error_code_and_title():
    [failed] = parse_body(raw("status_failed.json")).statuses
    update = StatusUpdate.parse(failed)
    assert (update.status, update.error_code, update.error_title) == ("failed", 131047, "Re-engagement message")
    assert failed["errors"] == [{"code": 131047, "title": "Re-engagement message",
                                 "message": "Re-engagement message"}]


def test_system_level_errors_are_returned_for_logging():
    notification = parse_body(raw("errors_system_level.json"))
    assert notification.errors == [{"code": 131000, "title": "Something went wrong",
                                    "message": "Something went wrong",
                                    "details": "Message failed to send due to an unknown error."}]
    assert notification.messages == notification.statuses == []


def test_unknown_fields_are_ignored():
    body = json.loads(raw("text.json"))
    body["brand_new"] = {"x": 1}
    body["entry"][0]["changes"][0]["value"]["messages"][0]["new_thing"] = [1, 2]
    body["entry"][0]["changes"][0]["value"]["surprise"] = True
    assert parse_notification(body).messages == EXPECTED["text.json"]


def test_changes_of_other_fields_are_skipped():
    body = {"object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "account_update", "value": {"event": "VERIFIED"}}]}]}
    assert parse_notification(body).messages == []


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"object": "page", "entry": []}', "object must be 'whatsapp_business_account'"),
        (b'{"object": "whatsapp_business_account"}', "no entry list"),
        (b'{"object": "whatsapp_business_account", "entry": {}}', "entry must be a list"),
        (b'{"object": "whatsapp_business_account", "entry": null}', "no entry list"),
        (b"[" * 200_000, "nested too deeply"),
        (b'{"a": ' * 200_000, "nested too deeply"),
        (b"1e999999", "must be a JSON object, got a number"),
        (b"NaN", "must be a JSON object, got a number"),
    ],
    ids=lambda v: v[:40] if isinstance(v, bytes) else None,
)
def test_a_body_of_the_wrong_shape_is_refused_with_a_reason(body, reason):
    with pytest.raises(WebhookFormatError, match=reason):
        parse_body(body)


def test_a_bad_message_is_reported_while_its_neighbours_are_kept():
    body = json.loads(raw("multi_message.json"))
    del body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    body["entry"][1]["changes"][0]["value"]["statuses"] = [{"id": "wamid.x", "status": "exploded"}]
    notification = parse_notification(body)
    assert [m["text"] for m in notification.messages] == ["I ordered a lamp last week", "Is the shop open on Sunday?"]
    assert notification.problems == [
        Problem("entry[0].changes[0].value.messages[0]", "the message has no id"),
        Problem("entry[1].changes[0].value.statuses[0]",
                "status.status must be one of sent, delivered, read, failed, got 'exploded'"),
    ]
    assert notification.summary() == (
        "entry[0].changes[0].value.messages[0]: the message has no id; entry[1].changes[0].value.statuses[0]: "
        "status.status must be one of sent, delivered, read, failed, got 'exploded'")
