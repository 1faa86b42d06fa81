"""POST /webhook: size cap, signature, parsing, dedup, buffer and enqueue, on a real Redis."""

from __future__ import annotations

import json
import time

import falcon.testing
import pytest

from actors import dead_letters
from app.buffer import claim_batch
from app.web.rejected import MAX_EXCERPT_BYTES, rejected_bodies
from app.web.webhook import ERROR_COUNTS_KEY
from tests.support.buffers import redis_now_ms
from tests.support.fixtures import raw, sign


def post(client, body: bytes, signature: str | None = "auto", **headers):
    if signature == "auto":
        signature = sign(body)
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    headers.setdefault("Content-Type", "application/json")
    return client.simulate_post("/webhook", body=body, headers=headers)


def test_a_signed_text_is_buffered_and_its_check_scheduled_after_the_window(client, enqueue, redis_client):
    # When Meta posts one text message
    result = post(client, raw("text.json"))
    # Then it is answered 200 and a buffer check is scheduled with the window as countdown
    assert result.status_code == 200
    assert result.json["messages"] == 1
    assert enqueue.calls == [("check_buffer_task", ("16505551234", 1), None, {"countdown": 3.0})]
    # And the message waits in the conversation's buffer, as the parser described it
    batch = claim_batch(redis_client, "16505551234", 1, max_wait_ms=15_000)
    assert [m["text"] for m in batch.messages] == ["Does it come in another color?"]
    assert batch.messages[0]["wamid"] == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="


def test_a_message_is_stamped_by_redis_clock_not_the_web_hosts(client, redis_client, monkeypatch):
    # Given a web host whose clock is an hour ahead
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)

    # When it accepts a message
    before = redis_now_ms(redis_client)
    assert post(client, raw("text.json")).status_code == 200
    after = redis_now_ms(redis_client)

    # Then the buffer's arrival times are Redis's, the clock the worker and the sweep judge them by
    for kind in ("first", "last"):
        assert before <= int(redis_client.get(f"app:{kind}:16505551234")) <= after, kind


def test_the_same_body_twice_is_appended_once(client, enqueue, redis_client):
    first = post(client, raw("multi_message.json"))
    assert first.status_code == 200 and first.json["messages"] == 3
    assert enqueue.calls == [
        ("check_buffer_task", ("16505551234", 1), None, {"countdown": 3.0}),
        ("check_buffer_task", ("16505551234", 2), None, {"countdown": 3.0}),
        ("check_buffer_task", ("447700900123", 1), None, {"countdown": 3.0}),
    ]
    enqueue.calls.clear()

    # When Meta sends it again while the messages still wait in their buffers
    second = post(client, raw("multi_message.json"))

    # Then nothing is appended twice, and each conversation gets one more
    # check for its current number (harmless: a batch is claimed once)
    assert second.status_code == 200 and second.json["duplicates"] == 3
    assert redis_client.llen("app:buffer:16505551234") == 2
    assert redis_client.llen("app:buffer:447700900123") == 1
    assert enqueue.calls == [
        ("check_buffer_task", ("16505551234", 2), None, {"countdown": 3.0}),
        ("check_buffer_task", ("447700900123", 1), None, {"countdown": 3.0}),
    ]


def test_a_redelivered_message_whose_buffer_was_claimed_schedules_nothing(client, enqueue, redis_client):
    assert post(client, raw("text.json")).status_code == 200
    assert claim_batch(redis_client, "16505551234", 1, max_wait_ms=15_000) is not None
    enqueue.calls.clear()

    result = post(client, raw("text.json"))

    assert result.status_code == 200 and result.json["duplicates"] == 1
    assert enqueue.calls == []


def test_a_username_only_customer_is_buffered_under_the_user_id(client, enqueue):
    assert post(client, raw("username_only.json")).status_code == 200
    assert enqueue.calls == [("check_buffer_task", ("BR.70021933458812006655", 1), None, {"countdown": 3.0})]


def test_each_status_is_enqueued_in_order(client, enqueue):
    assert post(client, raw("status_out_of_order.json")).status_code == 200
    calls = enqueue.named("update_message_status_task")
    assert [c[1][0]["status"] for c in calls] == ["read", "delivered", "sent"]
    assert all(c[1][0]["id"] == "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA" for c in calls)
    post(client, raw("status_failed.json"))
    failed = enqueue.named("update_message_status_task")[-1][1][0]
    assert failed["errors"][0]["code"] == 131047 and failed["errors"][0]["title"] == "Re-engagement message"


def test_statuses_are_not_deduplicated(client, enqueue):
    post(client, raw("status_read.json"))
    post(client, raw("status_read.json"))
    assert len(enqueue.named("update_message_status_task")) == 2


def test_system_level_errors_are_counted_and_answered_200(client, enqueue, redis_client):
    assert post(client, raw("errors_system_level.json")).status_code == 200
    post(client, raw("errors_system_level.json"))
    assert redis_client.hget(ERROR_COUNTS_KEY, "131000") == b"2"
    assert enqueue.calls == []


def test_a_non_ascii_fixture_is_verified_on_its_raw_bytes(client, enqueue):
    body = raw("text_non_ascii.json")
    assert b"\\u00e1" in body  # escaped as Meta sends it
    assert post(client, body).status_code == 200
    # A re-serialised copy of the same JSON does not carry the same signature
    reserialised = json.dumps(json.loads(body), ensure_ascii=False).encode()
    assert post(client, reserialised, signature=sign(body)).status_code == 401
    assert len(enqueue.calls) == 1


def test_a_missing_signature_is_401_and_nothing_is_stored(client, enqueue, redis_client):
    result = post(client, raw("text.json"), signature=None)
    assert result.status_code == 401
    assert "X-Hub-Signature-256" in result.json["description"]
    assert enqueue.calls == [] and redis_client.dbsize() == 0


@pytest.mark.parametrize("signature", [sign(b"another body"), "sha256=", "sha1=abc", "garbage",
                                       sign(b"x", secret="wrong")])
def test_a_wrong_signature_is_401(client, enqueue, signature):
    result = post(client, raw("text.json"), signature=signature)
    assert result.status_code == 401 and result.json["title"] == "Signature mismatch"
    assert enqueue.calls == []


def test_the_signature_hex_is_accepted_in_upper_case(client):
    body = raw("text.json")
    assert post(client, body, signature=sign(body).upper().replace("SHA256=", "sha256=")).status_code == 200


def test_without_an_app_secret_nothing_is_accepted(make_client, enqueue):
    result = post(make_client(whatsapp_app_secret=None), raw("text.json"))
    assert result.status_code == 503 and "WHATSAPP_APP_SECRET" in result.json["description"]
    assert enqueue.calls == []


def test_a_body_over_the_cap_is_413_by_its_declared_length(make_client, enqueue):
    client = make_client(webhook_max_body_bytes=1024)
    body = raw("text.json").ljust(1025)
    result = post(client, body)
    assert result.status_code == 413 and "1024 bytes" in result.json["description"]
    assert enqueue.calls == []


def _post_without_length(client, body: bytes):
    """POST ``body`` with no Content-Length (chunked), through the WSGI interface."""
    environ = falcon.testing.create_environ(method="POST", path="/webhook",
                                           headers={"X-Hub-Signature-256": sign(body),
                                                    "Transfer-Encoding": "chunked"})
    environ.pop("CONTENT_LENGTH", None)
    stream = environ["wsgi.input"] = _Stream(body)
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = int(status.split()[0])

    b"".join(client.app(environ, start_response))
    return answer["status"], stream


def test_a_body_over_the_cap_without_a_declared_length_is_413_and_read_no_further(make_client, enqueue):
    client = make_client(webhook_max_body_bytes=1024)
    status, stream = _post_without_length(client, raw("text.json").ljust(100_000))
    assert status == 413 and stream.read_bytes == 1025
    assert enqueue.calls == []


def test_a_chunked_body_under_the_cap_is_read_whole(client, enqueue):
    status, _ = _post_without_length(client, raw("text.json"))
    assert status == 200 and len(enqueue.calls) == 1


class _Stream:
    """A wsgi.input with no Content-Length that records how much was read."""

    def __init__(self, data: bytes) -> None:
        self.data, self.read_bytes = data, 0

    def read(self, size: int = -1) -> bytes:
        size = len(self.data) - self.read_bytes if size is None or size < 0 else size
        chunk = self.data[self.read_bytes:self.read_bytes + size]
        self.read_bytes += len(chunk)
        return chunk


def test_a_body_just_under_the_cap_is_accepted(make_client):
    client = make_client(webhook_max_body_bytes=2048)
    body = raw("text.json").ljust(2048)  # trailing spaces are valid JSON whitespace
    assert post(client, body).status_code == 200


@pytest.mark.parametrize("body, reason", [(b"{not json", "not valid JSON"),
                                          (b'{"object": "page", "entry": []}', "object must be")])
def test_a_signed_body_that_cannot_be_understood_is_200_and_kept_with_its_reason(client, enqueue, redis_client,
                                                                                 body, reason):
    result = post(client, body)
    assert result.status_code == 200 and result.json["status"] == "rejected"
    assert reason in result.json["reason"]
    [record] = rejected_bodies(redis_client)
    assert reason in record["error"] and record["raw"] == body.decode() and record["size_bytes"] == len(body)
    assert enqueue.calls == []
    # The broker's dead-letter reader shows it too, as the "webhook" queue's dead letter
    assert dead_letters.records(redis_client, "webhook") == [record]


def test_a_poison_body_retried_by_meta_is_one_record_and_bodies_are_kept_bounded(client, redis_client):
    post(client, b"{not json")
    post(client, b"{not json")
    assert len(rejected_bodies(redis_client)) == 1
    big = b"[" + b"1," * (MAX_EXCERPT_BYTES) + b"1]"
    post(client, big)
    record = rejected_bodies(redis_client)[-1]
    assert record["size_bytes"] == len(big) and len(record["raw"]) == MAX_EXCERPT_BYTES


def test_the_rejected_set_keeps_only_the_newest_records(redis_client):
    from app.web.rejected import record_rejected_body

    for n in range(5):
        record_rejected_body(redis_client, f"body {n}".encode(), "bad", ttl_ms=60_000, max_records=3)
    assert [r["raw"] for r in rejected_bodies(redis_client)] == ["body 2", "body 3", "body 4"]


def test_a_bad_message_next_to_good_ones_is_recorded_and_the_good_ones_kept(client, enqueue, redis_client):
    body = json.loads(raw("multi_message.json"))
    del body["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    data = json.dumps(body).encode()
    result = post(client, data)
    assert result.status_code == 200 and (result.json["messages"], result.json["problems"]) == (2, 1)
    assert len(enqueue.named("check_buffer_task")) == 2
    [record] = rejected_bodies(redis_client)
    assert "messages[0]: the message has no id" in record["error"]


def test_unknown_fields_are_ignored(client, enqueue):
    body = json.loads(raw("text.json"))
    body["entry"][0]["changes"][0]["value"]["messages"][0]["future_field"] = {"a": 1}
    body["entry"][0]["future_entry_field"] = 7
    assert post(client, json.dumps(body).encode()).json["messages"] == 1
    assert len(enqueue.calls) == 1


def test_when_redis_is_down_the_webhook_answers_503(make_client, enqueue, web_config):
    import dataclasses

    import falcon.testing
    import redis

    from app.web import create_app

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    app = create_app(dataclasses.replace(web_config), enqueue=enqueue, redis_client=dead)
    result = post(falcon.testing.TestClient(app), raw("text.json"))
    assert result.status_code == 503 and result.json["title"] == "Redis unavailable"
    assert enqueue.calls == []


def test_a_status_that_cannot_be_enqueued_is_503_so_meta_retries(client, enqueue):
    enqueue.fail_on.add("update_message_status_task")
    assert post(client, raw("status_sent.json")).status_code == 503


def test_a_failed_buffer_check_enqueue_is_503_and_metas_redelivery_schedules_it(client, enqueue, redis_client,
                                                                                caplog):
    # Given the queue refuses the buffer check of a message that was appended
    enqueue.fail_on.add("check_buffer_task")
    result = post(client, raw("text.json"))

    # Then Meta is told to send the body again; the message waits in the buffer
    assert result.status_code == 503
    assert redis_client.llen("app:buffer:16505551234") == 1
    assert "answering 503" in caplog.text

    # When Meta sends it again and the queue works
    enqueue.fail_on.clear()
    again = post(client, raw("text.json"))

    # Then the duplicate is not appended, but its conversation's check is scheduled
    assert again.status_code == 200 and again.json["duplicates"] == 1
    assert redis_client.llen("app:buffer:16505551234") == 1
    assert enqueue.calls == [("check_buffer_task", ("16505551234", 1), None, {"countdown": 3.0})]


def test_a_system_level_error_in_a_body_meta_must_resend_is_counted_once(client, enqueue, redis_client):
    # Given a body with a system-level error next to a status
    body = json.loads(raw("errors_system_level.json"))
    status = json.loads(raw("status_sent.json"))["entry"][0]["changes"][0]["value"]["statuses"][0]
    body["entry"][0]["changes"][0]["value"]["statuses"] = [status]
    data = json.dumps(body).encode()

    # When the status cannot be enqueued (503), and Meta sends the body again
    enqueue.fail_on.add("update_message_status_task")
    assert post(client, data).status_code == 503
    enqueue.fail_on.clear()
    assert post(client, data).status_code == 200

    # Then the error is counted once, for the delivery that was stored
    assert redis_client.hget(ERROR_COUNTS_KEY, "131000") == b"1"
