"""A bad part of a signed body is a problem where it is; the rest is still used,
and nothing a body holds makes the parser raise anything but WebhookFormatError."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.conversation import InboundMessage
from app.inbound import MESSAGE_KEYS
from app.status import StatusUpdate
from app.webhook import WebhookFormatError, parse_body
from tests.support.fixtures import FIXTURES, raw, text_json, value_of

GOOD_TEXT = "Does it come in another color?"
VALUE = "entry[0].changes[0].value"


def second_message(**fields: Any) -> dict[str, Any]:
    message = {"from": "447700900123", "id": "wamid.SECOND", "timestamp": "1749416390", "type": "text",
               "text": {"body": "the neighbour"}}
    message.update(fields)
    return {k: v for k, v in message.items() if v is not None}


def with_entry(entry: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body["entry"].append(entry)


def with_change(change: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body["entry"][0]["changes"].append(change)


def in_value(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: value_of(body).update(fields)


def with_message(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: value_of(body)["messages"].append(second_message(**fields))


BAD_NEIGHBOURS = {
    "an entry that is not an object": (with_entry("oops"), "entry[1]", "an entry must be an object, got a string"),
    "an entry whose changes are not a list": (with_entry({"id": "2", "changes": {"field": "messages"}}),
                                              "entry[1].changes", "must be a list, got an object"),
    "a change that is not an object": (with_change(7), "entry[0].changes[1]",
                                       "a change must be an object, got a number"),
    "a change without its field": (with_change({"value": {}}), "entry[0].changes[1]",
                                   "a change must name its field, got None"),
    "a change without a value": (with_change({"field": "messages"}), "entry[0].changes[1].value",
                                 "must be an object, got null"),
    "messages that are not a list": (
        with_entry({"id": "2", "changes": [{"field": "messages", "value": {"messages": {"id": "wamid.X"}}}]}),
        "entry[1].changes[0].value.messages", "must be a list, got an object"),
    "statuses that are not a list": (in_value(statuses="read"), f"{VALUE}.statuses", "must be a list, got a string"),
    "errors that are not a list": (in_value(errors=131000), f"{VALUE}.errors", "must be a list, got a number"),
    "a contact that is not an object": (lambda body: value_of(body)["contacts"].append(None),
                                        f"{VALUE}.contacts[1]", "a contact must be an object, got null"),
    "a message without its timestamp": (with_message(timestamp=None), f"{VALUE}.messages[1]",
                                        "message wamid.SECOND has no timestamp in seconds: None"),
    "a message without its type": (with_message(type=None), f"{VALUE}.messages[1]",
                                   "message wamid.SECOND has no type"),
    "a message that is not an object": (lambda body: value_of(body)["messages"].append([1]), f"{VALUE}.messages[1]",
                                        "a message must be an object, got list"),
    "a timestamp of Infinity": (with_message(timestamp=float("inf")), f"{VALUE}.messages[1]",
                                "message wamid.SECOND has no timestamp in seconds: inf"),
    "a timestamp no BIGINT holds": (with_message(timestamp=10**30), f"{VALUE}.messages[1]",
                                    "message wamid.SECOND has no timestamp in seconds: " + str(10**30)),
    "a type the task refuses (kind longer than its column)": (
        with_message(type="x" * 40), f"{VALUE}.messages[1]", "message.kind must be a short string (message "
                                                             "wamid.SECOND)"),
    "a lone surrogate in the sender": (with_message(**{"from": "4477\ud800"}), f"{VALUE}.messages[1]",
                                       "wa_id is not valid Unicode text (it holds a lone surrogate)"),
    "a wamid longer than its column": (with_message(id="w" * 256), f"{VALUE}.messages[1]",
                                       "message.wamid must be at most 255 characters, got 256"),
    "a sender longer than its column": (with_message(**{"from": "4" * 65}), f"{VALUE}.messages[1]",
                                        "message.wa_id must be at most 64 characters, got 65 (message wamid.SECOND)"),
    "a reaction whose emoji is longer than its column": (
        with_message(type="reaction", text=None, reaction={"message_id": "wamid.X", "emoji": "👍" * 65}),
        f"{VALUE}.messages[1]", "message.emoji must be at most 64 characters, got 65 (message wamid.SECOND)"),
    "a reply to a wamid longer than its column": (
        with_message(context={"from": "1", "id": "c" * 256}), f"{VALUE}.messages[1]",
        "message.context_id must be at most 255 characters, got 256 (message wamid.SECOND)"),
    "a status whose wamid is longer than its column": (
        in_value(statuses=[{"id": "w" * 256, "status": "read", "timestamp": "1749416390"}]),
        f"{VALUE}.statuses[0]", "status.id (the wamid) must be at most 255 characters, got 256"),
    "a status of Infinity seconds": (
        in_value(statuses=[{"id": "wamid.OUT", "status": "read", "timestamp": float("inf")}]),
        f"{VALUE}.statuses[0]", "status.timestamp must be seconds, got inf"),
    "a system error that is not an object": (in_value(errors=["down"]), f"{VALUE}.errors[0]",
                                             "an error must be an object, got a string"),
}


@pytest.mark.parametrize("name", BAD_NEIGHBOURS)
def test_a_bad_neighbour_is_a_problem_where_it_is_and_the_good_message_is_kept(name):
    mutate, where, reason = BAD_NEIGHBOURS[name]
    body = text_json()
    mutate(body)
    notification = parse_body(json.dumps(body).encode())
    assert [m["text"] for m in notification.messages] == [GOOD_TEXT]
    assert [str(p) for p in notification.problems] == [f"{where}: {reason}"]


def test_a_reason_quoting_the_body_is_cut_and_has_no_lone_surrogate():
    body = text_json()
    value_of(body)["messages"].append(second_message(id="\ud800" + "w" * 5000, type=None))
    [problem] = parse_body(json.dumps(body).encode()).problems
    assert problem.reason.startswith("message \\ud800www") and len(problem.reason) < 400
    str(problem).encode("utf-8")


def test_a_number_with_more_digits_than_python_converts_does_not_cost_the_body():
    # (json.loads refuses integers over 4300 digits with ValueError, for the whole body)
    data = raw("text.json").replace(b'"type":"text"', b'"type":"text","future":' + b"7" * 5000)
    assert b"7" * 5000 in data
    notification = parse_body(data)
    assert [m["text"] for m in notification.messages] == [GOOD_TEXT] and notification.problems == []


def test_a_body_with_nothing_but_bad_parts_is_only_problems():
    body = text_json()
    body["entry"] = ["a", {"changes": [{"field": "messages", "value": None}]}]
    notification = parse_body(json.dumps(body).encode())
    assert notification.empty
    assert [str(p) for p in notification.problems] == [
        "entry[0]: an entry must be an object, got a string",
        "entry[1].changes[0].value: must be an object, got null",
    ]


def test_the_summary_lists_the_first_problems_and_counts_the_rest():
    body = text_json()
    value_of(body)["messages"] = list(range(25))
    notification = parse_body(json.dumps(body).encode())
    assert len(notification.problems) == 25
    assert notification.summary().count("a message must be an object") == 10
    assert notification.summary().endswith("; and 15 more")


# Deep nesting: json.loads goes as deep as the recursion limit allows from where it
# runs, and repr() or str() of such a value, a few frames deeper, raises RecursionError.

def deepest(body: dict[str, Any]) -> bytes:
    """``body`` with each ``"@"`` replaced by lists nested as deep as parse_body decodes."""
    template = json.dumps(body).encode()

    def make(depth: int) -> bytes:
        return template.replace(b'"@"', b"[" * depth + b"]" * depth)

    def decodes(depth: int) -> bool:
        try:
            parse_body(make(depth))
        except WebhookFormatError as e:
            return "nested too deeply" not in str(e)
        return True

    low, high = 1, sys.getrecursionlimit() + 10
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if decodes(middle) else (low, middle - 1)
    assert low > 100 and not decodes(low + 1)
    return make(low)


def message_with(**fields: Any) -> dict[str, Any]:
    """text.json plus a second message with ``fields``."""
    body = text_json()
    value_of(body)["messages"].append(second_message(**fields))
    return body


def status_with(name: str, **fields: Any) -> dict[str, Any]:
    """The status fixture ``name`` with ``fields`` set in its status (``code`` in its error)."""
    body = json.loads(raw(name))
    status = value_of(body)["statuses"][0]
    if "code" in fields:
        status["errors"][0]["code"] = fields.pop("code")
    status.update(fields)
    return body


DEEP = {
    "the object": ({"object": "@", "entry": []}, None),
    "a message timestamp": (message_with(timestamp="@"), "has no timestamp in seconds: a list"),
    "a message type": (message_with(type="@"), "message wamid.SECOND has no type"),
    "a reaction's emoji": (message_with(type="reaction", reaction={"emoji": "@", "message_id": "wamid.Q"}), None),
    "a latitude": (message_with(type="location", location={"latitude": "@", "longitude": "@"}), None),
    "an interactive type": (message_with(type="interactive", interactive={"type": "@"}), None),
    "a contacts card list": (message_with(type="contacts", contacts="@"), None),
    "a status": (status_with("status_sent.json", status="@"), "got a list"),
    "a status timestamp": (status_with("status_sent.json", timestamp="@"),
                           "status.timestamp must be seconds, got a list"),
    "a status error code": (status_with("status_failed.json", code="@"), None),
    "a status error title": (status_with("status_failed.json", errors=[{"code": 1, "title": "@"}]), None),
}


@pytest.mark.parametrize("name", DEEP)
def test_a_value_nested_as_deep_as_json_goes_is_parsed_without_recursing(name):
    body, reason = DEEP[name]
    data = deepest(body)
    if name == "the object":
        with pytest.raises(WebhookFormatError, match="object must be 'whatsapp_business_account', got a list"):
            parse_body(data)
        return
    notification = parse_body(data)
    json.dumps([notification.messages, notification.statuses, notification.errors])
    if reason is not None:
        [problem] = notification.problems
        assert reason in problem.reason
    if b"wamid.SECOND" in data:
        assert notification.messages[0]["text"] == GOOD_TEXT


# Anything at all, anywhere in any fixture.

FIXTURE_BODIES = {p.name: json.loads(p.read_bytes()) for p in sorted(FIXTURES.glob("*.json"))
                  if p.name != "verification.json"}

ODD_SCALARS = st.sampled_from(["\ud800", "x\udfffy", "", " 12 ", "0x10", "1e3", "\u00b2", "-1", "NaN",
                               10**650, 2**63, -(2**63), float("nan"), float("inf"), -0.0, True])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | ODD_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def places(value: Any, path: tuple = ()) -> list[tuple]:
    """The path of every value in ``value`` (keys and indexes)."""
    found = [path]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, inner in items:
        found += places(inner, (*path, key))
    return found


@st.composite
def mutated_bodies(draw) -> bytes:
    name = draw(st.sampled_from(sorted(FIXTURE_BODIES)))
    body = json.loads(json.dumps(FIXTURE_BODIES[name]))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(places(body)))
        if not path:
            body = draw(JSON)
            continue
        parent = body
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced this place
    return json.dumps(body).encode("utf-8", "surrogatepass")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bodies())
def test_whatever_a_body_holds_the_parser_raises_only_webhook_format_error(data):
    try:
        notification = parse_body(data)
    except WebhookFormatError as e:
        str(e).encode("utf-8")
        return
    # What the handler stores, enqueues, logs and answers is UTF-8 JSON the tasks accept
    json.dumps([notification.messages, notification.statuses, notification.errors],
               ensure_ascii=False, allow_nan=False).encode("utf-8")
    json.dumps(notification.summary(), ensure_ascii=False).encode("utf-8")
    for message in notification.messages:
        assert list(message) == list(MESSAGE_KEYS)
        InboundMessage.parse(message)
    for status in notification.statuses:
        StatusUpdate.parse(status)
