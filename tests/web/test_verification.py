"""GET /webhook: Meta's verification handshake (fixtures/verification.json)."""

from __future__ import annotations

import json

import pytest

from tests.support.fixtures import FIXTURES
from tests.web.conftest import VERIFY_TOKEN

SPEC = json.loads((FIXTURES / "verification.json").read_text())


def query(**changes):
    params = dict(SPEC["query"], **{"hub.verify_token": VERIFY_TOKEN})
    params.update({k.replace("_", ".", 1): v for k, v in changes.items()})
    return {k: v for k, v in params.items() if v is not None}


def test_the_right_token_gets_the_challenge_as_plain_text(client):
    result = client.simulate_get(SPEC["path"], params=query())
    assert result.status_code == SPEC["expect"]["status"]
    assert result.headers["content-type"].startswith(SPEC["expect"]["content_type"])
    assert result.text == SPEC["expect"]["body"]


def test_a_wrong_token_is_403(client):
    result = client.simulate_get("/webhook", params=query(hub_verify_token="nope"))
    assert result.status_code == SPEC["wrong_token_expect"]["status"]
    assert result.json["description"] == "hub.verify_token is wrong"


def test_with_no_verify_token_configured_every_handshake_is_403(make_client):
    result = make_client(whatsapp_verify_token=None).simulate_get("/webhook", params=query())
    assert result.status_code == 403 and "not configured" in result.json["description"]


@pytest.mark.parametrize("missing", ["hub.mode", "hub.verify_token", "hub.challenge"])
def test_a_missing_parameter_is_400_naming_it(client, missing):
    params = query()
    del params[missing]
    result = client.simulate_get("/webhook", params=params)
    assert result.status_code == 400 and missing in result.json["description"]


def test_a_mode_other_than_subscribe_is_400(client):
    assert client.simulate_get("/webhook", params=query(hub_mode="unsubscribe")).status_code == 400
