"""The WhatsApp Cloud API client against the local stand-in (a real HTTP server)."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request

import pytest

from app.config import Config
from app.devtools.whatsapp_standin import WhatsAppStandin
from app.errors import ConfigError, TransientError
from app.whatsapp import (
    MAX_TEXT_LENGTH,
    PERMANENT_CODES,
    TRANSIENT_CODES,
    WhatsAppClient,
    WhatsAppPermanentError,
    WhatsAppTransientError,
    fit_text,
)


@pytest.fixture
def standin():
    with WhatsAppStandin() as server:
        yield server


@pytest.fixture
def client(standin):
    with WhatsAppClient(f"{standin.url}/v21.0", "test-token", "106540352242922", timeout_s=5) as client:
        yield client


def test_send_text_to_a_phone_number_posts_metas_payload_and_returns_the_wamid(standin, client):
    wamid = client.send_text(to="16505551234", recipient=None, text="It comes in blue.", callback_data="batch:1")
    [request] = standin.requests()
    assert request["kind"] == "send" and request["phone_number_id"] == "106540352242922"
    assert request["authorization"] == "Bearer test-token"
    assert request["body"] == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "16505551234",
                               "type": "text", "text": {"body": "It comes in blue."},
                               "biz_opaque_callback_data": "batch:1"}
    assert wamid == request["response"]["body"]["messages"][0]["id"] and wamid.startswith("wamid.")


def test_a_username_only_customer_is_sent_to_as_recipient(standin, client):
    client.send_text(to=None, recipient="BR.70021933458812006655", text="We ship to Brazil.")
    body = standin.requests()[0]["body"]
    assert body["recipient"] == "BR.70021933458812006655" and "to" not in body
    assert "biz_opaque_callback_data" not in body


def test_every_send_gets_its_own_wamid(client):
    assert len({client.send_text(to="1", recipient=None, text=f"n{i}") for i in range(3)}) == 3


def test_mark_read_with_and_without_the_typing_indicator(standin, client):
    client.mark_read("wamid.in1")
    client.mark_read("wamid.in2", typing=False)
    assert [r["body"] for r in standin.requests()] == [
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.in1",
         "typing_indicator": {"type": "text"}},
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.in2"},
    ]
    assert all(r["response"]["body"] == {"success": True} for r in standin.requests())


@pytest.mark.parametrize("code", sorted(TRANSIENT_CODES))
def test_throttling_and_metas_temporary_failures_are_transient_even_as_http_400(standin, client, code):
    standin.fail(code=code, http_status=400)
    with pytest.raises(WhatsAppTransientError) as caught:
        client.send_text(to="1", recipient=None, text="hi")
    assert (caught.value.code, caught.value.http_status) == (code, 400)
    assert isinstance(caught.value, TransientError) and caught.value.title


@pytest.mark.parametrize("code", sorted(PERMANENT_CODES))
def test_permanent_codes_are_not_retried_even_as_http_500(standin, client, code):
    standin.fail(code=code, http_status=500)
    with pytest.raises(WhatsAppPermanentError) as caught:
        client.send_text(to="1", recipient=None, text="hi")
    assert caught.value.code == code and not isinstance(caught.value, TransientError)


@pytest.mark.parametrize("http_status, transient", [(500, True), (503, True), (429, True), (400, False),
                                                    (403, False)])
def test_an_unlisted_code_follows_the_http_status(standin, client, http_status, transient):
    standin.fail(code=999999, http_status=http_status)
    with pytest.raises(WhatsAppTransientError if transient else WhatsAppPermanentError):
        client.send_text(to="1", recipient=None, text="hi")


def test_failures_last_the_asked_number_of_sends_then_sending_works(standin, client):
    standin.fail(code=131056, http_status=400, times=2)
    for _ in range(2):
        with pytest.raises(WhatsAppTransientError):
            client.send_text(to="1", recipient=None, text="hi")
    assert client.send_text(to="1", recipient=None, text="hi").startswith("wamid.")


def test_failures_for_one_customer_leave_the_others_alone_in_the_order_they_were_asked(standin, client):
    # Given a 429 then a 500 for one customer (by phone number), and a 401 for a username-only one
    standin.fail(code=130429, http_status=429, to="111")
    standin.fail(code=2, http_status=500, to="111")
    standin.fail(code=190, http_status=401, to="US.222")
    # When three customers are written to
    assert client.send_text(to="333", recipient=None, text="hi").startswith("wamid.")
    answers = []
    for to, recipient in (("111", None), ("111", None), (None, "US.222"), ("111", None)):
        try:
            client.send_text(to=to, recipient=recipient, text="hi")
            answers.append(200)
        except (WhatsAppTransientError, WhatsAppPermanentError) as e:
            answers.append((type(e).__name__, e.http_status, e.code))
    # Then only the named ones failed, each with its own answers in order
    assert answers == [("WhatsAppTransientError", 429, 130429), ("WhatsAppTransientError", 500, 2),
                       ("WhatsAppPermanentError", 401, 190), 200]
    assert all(isinstance(r["at"], float) for r in standin.requests())


def test_a_failure_for_one_customer_is_set_over_http_and_a_bad_one_refused(standin, client):
    assert _http("POST", f"{standin.url}/_standin/fail", {"code": 131026, "to": "111"})["failing"]["to"] == "111"
    assert client.send_text(to="222", recipient=None, text="hi").startswith("wamid.")
    with pytest.raises(WhatsAppPermanentError):
        client.send_text(to="111", recipient=None, text="hi")
    with pytest.raises(urllib.error.HTTPError) as refused:
        _http("POST", f"{standin.url}/_standin/fail", {"code": 131026, "to": "111", "kind": "read"})
    assert refused.value.code == 400


def test_mark_read_errors_are_classified_too(standin, client):
    standin.fail(code=131000, http_status=500, kind="read")
    with pytest.raises(WhatsAppTransientError):
        client.mark_read("wamid.in1")


def test_a_missing_token_is_refused_by_the_standin_as_meta_does(standin):
    with WhatsAppClient(standin.url, "x", "1") as client:
        client._http.headers["Authorization"] = ""
        with pytest.raises(WhatsAppPermanentError) as caught:
            client.send_text(to="1", recipient=None, text="hi")
    assert caught.value.code == 190


def test_an_unreachable_api_is_transient(standin):
    url = standin.url
    standin.stop()
    with WhatsAppClient(url, "t", "1", timeout_s=2) as client, pytest.raises(WhatsAppTransientError) as caught:
        client.send_text(to="1", recipient=None, text="hi")
    assert caught.value.code is None and caught.value.http_status is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(to=None, recipient=None, text="hi"), "needs `to`"),
    (dict(to="1", recipient=None, text="  "), "non-empty text"),
    (dict(to="1", recipient=None, text="x" * 4097), "at most 4096"),
])
def test_bad_arguments_are_refused_before_any_request(standin, client, kwargs, message):
    with pytest.raises(ValueError, match=message):
        client.send_text(**kwargs)
    assert standin.requests() == []


def test_from_config_needs_the_token_and_phone_number_id(standin):
    with pytest.raises(ConfigError, match="WHATSAPP_TOKEN and WHATSAPP_PHONE_NUMBER_ID"):
        WhatsAppClient.from_config(Config())
    config = dataclasses.replace(Config(), whatsapp_token="t", whatsapp_phone_number_id="42",
                                 whatsapp_api_base=standin.url + "/v21.0")
    with WhatsAppClient.from_config(config) as client:
        client.send_text(to="1", recipient=None, text="hi")
    assert standin.requests()[0]["phone_number_id"] == "42"


def _http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_the_standin_is_driven_over_http(standin, client):
    # Given a failure set over HTTP, as the demo and other processes do
    _http("POST", f"{standin.url}/_standin/fail", {"code": 131016, "http_status": 503, "times": 1})
    with pytest.raises(WhatsAppTransientError):
        client.send_text(to="1", recipient=None, text="first")
    client.send_text(to="1", recipient=None, text="second")
    # Then its record is readable over HTTP, and can be cleared
    recorded = _http("GET", f"{standin.url}/_standin/requests")
    assert [(r["body"]["text"]["body"], r["response"]["status"]) for r in recorded] == [("first", 503),
                                                                                      ("second", 200)]
    _http("DELETE", f"{standin.url}/_standin/requests")
    assert _http("GET", f"{standin.url}/_standin/requests") == []


def test_the_standin_answers_chosen_wamids_when_told_so_over_http(standin, client):
    # Given two wamids chosen over HTTP (a test posts statuses of a reply before it is sent)
    _http("POST", f"{standin.url}/_standin/ids", {"ids": ["wamid.CHOSEN1", "wamid.CHOSEN2"]})
    standin.fail(code=131016, http_status=503)
    with pytest.raises(WhatsAppTransientError):
        client.send_text(to="1", recipient=None, text="refused")
    # Then the next successful sends get them, in order, and then fresh ones again
    sent = [client.send_text(to="1", recipient=None, text=str(n)) for n in range(3)]
    assert sent[:2] == ["wamid.CHOSEN1", "wamid.CHOSEN2"]
    assert sent[2].startswith("wamid.STANDIN")


def test_a_call_that_outlasts_the_timeout_is_transient(standin):
    standin.stall(3)
    with WhatsAppClient(standin.url, "t", "1", timeout_s=0.3) as client, \
            pytest.raises(WhatsAppTransientError, match="timed out"):
        client.send_text(to="1", recipient=None, text="hi")


def test_a_timeout_after_the_request_left_may_have_sent_the_message(standin):
    # Given a stand-in that answers only after the client gave up
    standin.stall(2)
    with WhatsAppClient(standin.url, "t", "1", timeout_s=0.3) as client, \
            pytest.raises(WhatsAppTransientError) as caught:
        client.send_text(to="1", recipient=None, text="hi")
    # Then the error says Meta may have the message
    assert caught.value.maybe_sent is True


def test_an_unreachable_api_has_sent_nothing(standin):
    url = standin.url
    standin.stop()
    with WhatsAppClient(url, "t", "1", timeout_s=2) as client, pytest.raises(WhatsAppTransientError) as caught:
        client.send_text(to="1", recipient=None, text="hi")
    assert caught.value.maybe_sent is False


def test_metas_refusals_have_sent_nothing(standin, client):
    standin.fail(code=131056, http_status=400)
    with pytest.raises(WhatsAppTransientError) as caught:
        client.send_text(to="1", recipient=None, text="hi")
    assert caught.value.maybe_sent is False


@pytest.mark.parametrize("text, expected_end", [
    ("It comes in blue. " * 300, "It comes in blue. …"),
    ("word " * 1000, "word…"),
    ("x" * 5000, "x…"),
])
def test_a_text_over_the_limit_is_cut_at_a_boundary_with_an_ellipsis(text, expected_end):
    fitted = fit_text(text)
    assert len(fitted) <= MAX_TEXT_LENGTH and fitted.endswith(expected_end)
    assert fit_text("short enough") == "short enough"
