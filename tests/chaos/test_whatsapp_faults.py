"""Scenario 4: WhatsApp answering 429 and 500 for a while, and refusing some sends for good.

gunicorn and a ``dramatiq actors`` worker (tests/support/stack.py) send
to the WhatsApp stand-in, which is given each conversation's own answers
(``fail(..., to=customer)``): throttling (HTTP 429, code 130429) and
server errors (HTTP 500, an unlisted code, so the status decides) up to
three times in a row, which the task's three retries get through; an
invalid recipient (HTTP 400, code 131026) and a bad token (HTTP 401, code
190), which are permanent.  Retries run at 0.5, 1 and 2 s (the runbook's
5, 10 and 20 s divided by 10, through RETRY_DELAYS_SECONDS).

The stand-in records every attempt with its time, so the test counts
what WhatsApp accepted per conversation (exactly one reply, none twice)
and checks that each retry waited at least its delay.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import pytest

from tests.support.customer_bodies import text_from
from tests.support.fixtures import OFFLINE
from tests.support.stack import Stack, running_stack
from tests.support.waiting import wait_for
from tests.support.worker_log import retries

#: The runbook's 5, 10 and 20 s, divided by 10.
RETRY_DELAYS_S = (0.5, 1.0, 2.0)
#: Slack for the stand-in's clock reading an attempt a little before the worker's timer was due.
CLOCK_SLACK_S = 0.05

THROTTLED = (429, 130429)
#: Code 2 ("service temporarily unavailable") is in neither list: the HTTP status makes it transient.
SERVER_ERROR = (500, 2)
#: Customer -> what WhatsApp answers their reply's first attempts (then it accepts).
TRANSIENT = {
    "15554000001": [THROTTLED, THROTTLED, THROTTLED],
    "15554000002": [SERVER_ERROR, SERVER_ERROR, SERVER_ERROR],
    "15554000003": [THROTTLED, SERVER_ERROR, THROTTLED],
    "15554000004": [SERVER_ERROR, THROTTLED],
    "15554000005": [SERVER_ERROR],
    "15554000006": [THROTTLED],
    "15554000007": [],
    "15554000008": [],
}
#: Customer -> WhatsApp's permanent refusal of their reply (HTTP status, code, words of its title).
PERMANENT = {
    "15554000009": (400, 131026, "Message undeliverable"),
    "15554000010": (401, 190, "Invalid OAuth access token"),
}


@pytest.fixture(scope="module")
def faults_stack(engine, checkpoints, tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("whatsapp-faults"),
                       {"RETRY_DELAYS_SECONDS": ",".join(f"{d:g}" for d in RETRY_DELAYS_S)}) as stack:
        yield stack


@pytest.fixture
def stack(faults_stack, db):
    faults_stack.reset()
    yield faults_stack
    faults_stack.wait_idle()


def _attempts(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    """Every send the stand-in received, per customer, oldest first."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in stack.whatsapp.requests():
        if request["kind"] == "send":
            found[request["body"]["to"]].append(request)
    return found


def _settled(stack: Stack) -> bool:
    attempts = _attempts(stack)
    return (all(any(a["response"]["status"] == 200 for a in attempts[c]) for c in TRANSIENT)
            and all(attempts[c] for c in PERMANENT))


def test_whatsapp_429s_and_500s_are_retried_with_backoff_permanent_errors_recorded_none_sent_twice(stack, figures):
    # Given WhatsApp's answers for each customer's reply
    for customer, answers in TRANSIENT.items():
        for http_status, code in answers:
            stack.whatsapp.fail(code=code, http_status=http_status, to=customer)
    for customer, (http_status, code, _) in PERMANENT.items():
        stack.whatsapp.fail(code=code, http_status=http_status, to=customer)

    # When each customer writes
    customers = [*TRANSIENT, *PERMANENT]
    for i, customer in enumerate(customers):
        answer = stack.post(text_from(customer, f"wamid.WAFAULT{i:04d}", f"question {i}"))
        assert (answer.status_code, answer.json()["messages"]) == (200, 1), answer.text
    wait_for(lambda: _settled(stack), timeout_s=90, interval_s=0.1)
    stack.wait_idle()

    # Then each transient customer's reply was tried once per failure, then accepted once
    attempts = _attempts(stack)
    for customer, answers in TRANSIENT.items():
        assert [a["response"]["status"] for a in attempts[customer]] == [s for s, _ in answers] + [200], customer
        # each retry came no sooner than its delay (5, 10, 20 s scaled)
        times = [a["at"] for a in attempts[customer]]
        for k, (before, after) in enumerate(itertools.pairwise(times)):
            assert after - before >= RETRY_DELAYS_S[k] - CLOCK_SLACK_S, (customer, k, after - before)
    # and the worker logged one retry per failure, at the schedule's delays, in order
    logged = retries(stack.log_dir)
    assert len(logged) == sum(len(a) for a in TRANSIENT.values())
    per_task: dict[str, list[float]] = defaultdict(list)
    for task, delay in logged:
        per_task[task].append(delay)
    assert sorted(per_task.values()) == sorted(list(RETRY_DELAYS_S[:len(a)]) for a in TRANSIENT.values() if a)

    # And a permanent refusal got exactly one attempt, recorded on the reply
    for customer, (http_status, code, title) in PERMANENT.items():
        assert [a["response"]["status"] for a in attempts[customer]] == [http_status], customer
        (reply,) = [m for m in stack.history(customer)["messages"] if m["author"] == "ai"]
        assert (reply["status"], reply["error_code"], reply["wamid"]) == ("failed", code, None), reply
        assert title in reply["error_title"], reply

    # And every transient customer has exactly the reply WhatsApp accepted: none lost, none twice
    accepted = {c: [a for a in attempts[c] if a["response"]["status"] == 200] for c in customers}
    for customer in TRANSIENT:
        (sent,) = accepted[customer]
        assert sent["body"]["text"]["body"].startswith(OFFLINE)
        ai = [m for m in stack.history(customer)["messages"] if m["author"] == "ai"]
        assert [(m["status"], m["wamid"]) for m in ai] == [("sent", sent["response"]["body"]["messages"][0]["id"])]
    assert stack.dead_letters() == []
    figures(messages=len(customers), transient_failures=len(logged), retries_seen=len(logged),
            permanent_failures=len(PERMANENT), permanent_attempts=sum(len(attempts[c]) for c in PERMANENT),
            dead_lettered=len(stack.dead_letters()), replies=sum(len(accepted[c]) for c in customers),
            duplicates=sum(max(0, len(accepted[c]) - 1) for c in customers),
            lost=sum(1 for c in TRANSIENT if not accepted[c]), retry_delays_s=list(RETRY_DELAYS_S))
