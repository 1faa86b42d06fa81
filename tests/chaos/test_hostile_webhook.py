"""Scenario 6 (hostile input), the webhook side, against a real gunicorn and a
real ``dramatiq actors`` worker consuming what the webhook enqueues:

- 10,000 hostile bodies, signed correctly (tests/chaos/bodies.py), never get
  a 5xx nor crash the worker, and whatever the webhook accepted is stored;
- unsigned or wrongly signed bodies get 401, and nothing is enqueued;
- bodies over the cap get 413 with a JSON reason, however their size is
  announced (declared, lied about, chunked), and nothing is enqueued.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.db import Message, MessageStatus
from app.web.rejected import rejected_bodies
from tests.chaos.bodies import hostile_body, shrinking_bodies
from tests.chaos.hostile import (
    crash_lines,
    env_seed,
    inflight_elements,
    queue_state,
    raw_request,
    worker_pids,
)
from tests.support.fixtures import raw, sign, text_body
from tests.support.stack import running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hostile_stack(engine, checkpoints, tmp_path_factory):
    """The module's own stack: gunicorn and a ``dramatiq actors`` node of one process, two threads."""
    with running_stack(tmp_path_factory.mktemp("hostile")) as stack:
        yield stack

#: How many signed hostile bodies the fuzz sends (CHAOS_FUZZ_BODIES to change it).
BODIES = int(os.environ.get("CHAOS_FUZZ_BODIES", 10_000))
#: Bodies built from each Hypothesis example (one ``Random`` each): the engine's
#: own cost per example would otherwise be most of the run on this machine.
PER_EXAMPLE = 10
#: The fuzz's seed, fixed so that CI replays the same bodies (CHAOS_FUZZ_SEED to explore).
SEED = env_seed(20261127)
#: The webhook's body cap (WEBHOOK_MAX_BODY_BYTES's default).
CAP = 4 * 1024 * 1024
#: Sending threads (gunicorn runs 2 sync workers).
SENDERS = 3
#: Bodies of the shrinking run, one Hypothesis example and one request each (CHAOS_SHRINKING_BODIES to change it).
SHRINKING_BODIES = int(os.environ.get("CHAOS_SHRINKING_BODIES", 300))



@dataclass
class Tally:
    """What the webhook answered, summed over the threads that sent."""

    codes: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    #: (kind, size, status or error, answer excerpt, body excerpt) of each answer that was not the expected one
    wrong: list[tuple] = field(default_factory=list)
    accepted_messages: int = 0
    duplicates: int = 0
    statuses: int = 0
    problems: int = 0
    rejected: int = 0
    sent: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _stored(db) -> tuple[int, int]:
    """(customer messages, statuses) in the database."""
    with db() as session:
        return (session.scalar(select(func.count()).select_from(Message).where(Message.author == "customer")) or 0,
                session.scalar(select(func.count()).select_from(MessageStatus)) or 0)


def _send_all(port: int, work: queue.Queue, tally: Tally) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while (item := work.get()) is not None:
        kind, body = item
        expected = 413 if len(body) > CAP else 200
        try:
            conn.request("POST", "/webhook", body=body,
                         headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)})
            response = conn.getresponse()
            status, answer = response.status, response.read()
            if response.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            status, answer = type(e).__name__, b""
        with tally.lock:
            tally.sent += 1
            tally.bytes += len(body)
            tally.codes[status] += 1
            tally.kinds[kind] += 1
            try:
                data = json.loads(answer) if status == 200 else {}
            except ValueError:
                data = {"status": "not JSON"}
            if status != expected or (status == 200 and data.get("status") not in ("ok", "rejected")):
                tally.wrong.append((kind, len(body), status, answer[:300], body[:300]))
            elif data.get("status") == "ok":
                tally.accepted_messages += data["messages"]
                tally.duplicates += data["duplicates"]
                tally.statuses += data["statuses"]
                tally.problems += data["problems"]
            elif data.get("status") == "rejected":
                tally.rejected += 1
    conn.close()


# -- Signatures ------------------------------------------------------------------------------------------------


def _bad_signatures(body: bytes) -> dict[str, dict[str, str] | list[tuple[str, str]]]:
    good = sign(body)
    digest = good.partition("=")[2]
    return {
        "none": {},
        "empty": {"X-Hub-Signature-256": ""},
        "wrong secret": {"X-Hub-Signature-256": sign(body, "not-the-app-secret")},
        "another body's": {"X-Hub-Signature-256": sign(body + b" ")},
        "truncated": {"X-Hub-Signature-256": good[:-1]},
        "digest only": {"X-Hub-Signature-256": digest},
        "prefix only": {"X-Hub-Signature-256": "sha256="},
        "sha1 prefix": {"X-Hub-Signature-256": "sha1=" + digest},
        "sha512 prefix": {"X-Hub-Signature-256": "sha512=" + digest},
        "twice the digest": {"X-Hub-Signature-256": good + digest},
        "not hex": {"X-Hub-Signature-256": "sha256=" + "z" * 64},
        "the old header": {"X-Hub-Signature": "sha1=" + digest},
        "header twice (good and bad)": [("X-Hub-Signature-256", good), ("X-Hub-Signature-256", "sha256=00")],
        "header twice (bad and good)": [("X-Hub-Signature-256", "sha256=00"), ("X-Hub-Signature-256", good)],
        "header twice (both good)": [("X-Hub-Signature-256", good), ("X-Hub-Signature-256", good)],
    }


def test_unsigned_or_wrongly_signed_bodies_are_401_and_nothing_is_enqueued(hostile_stack, figures):
    stack = hostile_stack
    stack.reset()
    before = queue_state(stack)
    answers: Counter = Counter()
    bodies = [raw("text.json"), raw("status_read.json"), text_body("wamid.UNSIGNED", "hi"),
              b'{"object": "whatsapp_business_account", "entry": [oops', b""]
    for body in bodies:
        for name, headers in _bad_signatures(body).items():
            pairs = headers if isinstance(headers, list) else list(headers.items())
            head = (b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    + b"".join(f"{k}: {v}\r\n".encode() for k, v in pairs)
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
            status, answer = raw_request(stack.port, head, [body])
            answers[status] += 1
            assert status == 401, (name, body[:60], status, answer)
            assert json.loads(answer)["title"].startswith("Signature"), answer

    # Nothing was buffered, enqueued, delayed or recorded, and nothing ran
    stack.wait_idle()
    assert queue_state(stack) == before == {"default": 0, "state": 0, "delayed": 0, "dead": 0, "rejected": 0,
                                             "app_keys": []}
    assert stack.sends() == []
    figures(badly_signed_requests=sum(answers.values()), answered_401=answers[401], enqueued=0)


# -- The body cap ----------------------------------------------------------------------------------------------


def test_bodies_over_the_cap_are_413_with_a_json_reason_and_nothing_is_enqueued(hostile_stack, figures):
    stack = hostile_stack
    stack.reset()
    before = queue_state(stack)
    big = text_body("wamid.BIG", "big", padding="x" * CAP)
    signature = sign(big).encode()
    head = (b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-Hub-Signature-256: " + signature + b"\r\n")
    chunks = [big[i:i + 256 * 1024] for i in range(0, len(big), 256 * 1024)]
    cases = {
        # the declared length is over the cap: refused before a byte is read
        "declared": (head + f"Content-Length: {len(big)}\r\n\r\n".encode(), [big]),
        # a length over the cap with (almost) nothing after it
        "declared, body never sent": (head + f"Content-Length: {CAP + 1}\r\n\r\n".encode(), [b"{}"]),
        # a lie the other way: a small length announced, the whole body sent (read no further than said)
        "a small length announced": (head + b"Content-Length: 100\r\n\r\n", [big]),
        # no length at all: chunked, read one byte past the cap and no further
        "chunked": (head + b"Transfer-Encoding: chunked\r\n\r\n",
                    [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks] + [b"0\r\n\r\n"]),
    }
    answers = {}
    for name, (request_head, parts) in cases.items():
        status, answer = raw_request(stack.port, request_head, parts)
        answers[name] = status
        if name == "a small length announced":
            # (its first 100 bytes are a body whose signature is not the one sent)
            assert status == 401, (name, status, answer)
            continue
        assert status == 413, (name, status, answer)
        reason = json.loads(answer)
        assert reason["title"] == "Body too large" and str(CAP) in reason["description"], reason

    # Nothing was buffered, enqueued or recorded, and the webhook still takes a good body
    stack.wait_idle()
    assert queue_state(stack) == before
    assert stack.post(raw("status_read.json")).status_code == 200
    figures(over_the_cap_requests=len(cases), answers=answers, enqueued=0)


# -- The fuzz --------------------------------------------------------------------------------------------------


def test_a_signed_body_that_would_get_a_5xx_is_shrunk_to_its_cause(hostile_stack, db, figures):
    """The property, one request per Hypothesis example: a failure is shrunk to the
    simplest body that still fails (the 10,000-body run below cannot shrink).
    (``db`` empties the database after it: the run below counts what it stores.)"""
    stack = hostile_stack
    stack.reset()
    main_pid, children = worker_pids(stack)
    answers: Counter = Counter()

    @seed(SEED)
    @settings(max_examples=SHRINKING_BODIES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(shrinking_bodies())
    def answered_200_in_json(body: bytes) -> None:
        response = stack.post(body)
        answers[response.status_code] += 1
        assert response.status_code == 200, (response.status_code, response.text[:300])
        assert response.json()["status"] in ("ok", "rejected"), response.text[:300]

    answered_200_in_json()
    stack.wait_idle(timeout_s=120)
    dead = stack.dead_letters()
    assert dead == [], f"{len(dead)} dead letters, the first: {[d['error'] for d in dead[:5]]}"
    assert inflight_elements(stack) == 0
    assert worker_pids(stack) == (main_pid, children), "a worker process crashed (or was replaced)"
    figures(shrinking_bodies=sum(answers.values()), status_codes={str(k): v for k, v in answers.items()},
            dead_letters=0)


def test_signed_hostile_bodies_never_get_a_5xx_nor_crash_the_worker(hostile_stack, db, figures):
    stack = hostile_stack
    stack.reset()
    main_pid, children = worker_pids(stack)
    stored_before = _stored(db)
    tally = Tally()
    work: queue.Queue = queue.Queue(maxsize=200)
    senders = [threading.Thread(target=_send_all, args=(stack.port, work, tally), daemon=True)
               for _ in range(SENDERS)]
    started = time.monotonic()
    for sender in senders:
        sender.start()

    # Given 10,000 hostile bodies, a few of them sent twice in a row (Meta redelivers)
    @seed(SEED)
    @settings(max_examples=BODIES // PER_EXAMPLE, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.randoms(use_true_random=True))
    def generate(drawn):
        rnd = random.Random(drawn.getrandbits(64))  # (Hypothesis's own Random records every call: slower)
        previous = None
        for _ in range(PER_EXAMPLE):
            if previous is not None and rnd.random() < 0.03:
                work.put(("again", previous))
                continue
            kind, body = hostile_body(rnd)
            work.put((kind, body))
            previous = body

    try:
        generate()
    finally:
        for _ in senders:
            work.put(None)
        for sender in senders:
            sender.join(300)
    sent_in = time.monotonic() - started

    # Then none got a 5xx (nor anything but 200, or 413 over the cap), each 200 in JSON
    assert tally.sent == BODIES
    assert tally.wrong == [], f"{len(tally.wrong)} unexpected answers, the first: {tally.wrong[:5]}"

    # And the worker ran everything they enqueued: nothing waits, runs or is stuck in flight...
    stack.wait_idle(timeout_s=240)
    drained_in = time.monotonic() - started
    assert inflight_elements(stack) == 0
    # ...no task failed: the webhook hands the tasks only what their own checks accept...
    dead = stack.dead_letters()
    assert dead == [], f"{len(dead)} dead letters, the first: {[d['error'] for d in dead[:5]]}"
    # ...every message and status answered 200 is stored: nothing accepted is lost...
    inbound, stored_statuses = (after - before for after, before in zip(_stored(db), stored_before, strict=True))
    assert (inbound, stored_statuses) == (tally.accepted_messages, tally.statuses)
    # ...what was not used is kept with its reason...
    records = rejected_bodies(stack.redis)
    assert records and all(r["error"].startswith("rejected ") and r["problems"] for r in records)
    # ...and the worker is the same, healthy node
    assert worker_pids(stack) == (main_pid, children), "a worker process crashed (or was replaced)"
    assert crash_lines(stack) == []
    health = stack.http.get("/health")
    assert health.status_code == 200 and health.json()["celery"] == "1 worker(s) active", health.text

    figures(bodies=tally.sent, seed=SEED, megabytes=round(tally.bytes / 1e6, 1),
            status_codes={str(k): v for k, v in sorted(tally.codes.items(), key=str)},
            server_errors=sum(v for k, v in tally.codes.items() if isinstance(k, int) and k >= 500),
            kinds=dict(tally.kinds), rejected_whole=tally.rejected, with_problems=tally.problems,
            messages_enqueued=tally.accepted_messages, duplicates=tally.duplicates,
            statuses_enqueued=tally.statuses, stored_messages=inbound, stored_statuses=stored_statuses,
            rejected_records=len(records), dead_letters=len(dead), worker_crashes=0,
            seconds_sending=round(sent_in, 1), seconds_until_worker_idle=round(drained_in, 1))
