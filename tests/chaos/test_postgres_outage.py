"""Scenario 3: PostgreSQL unavailable for 30 s under a running stack.

gunicorn and a ``dramatiq actors`` worker (tests/support/stack.py) reach
the run's PostgreSQL through a TCP proxy the test cuts: new connections
are refused and live ones dropped, as when the server is down.  Retries
run at 1, 2 and 4 s (the runbook's 5, 10 and 20 s divided by 5, through
RETRY_DELAYS_SECONDS); the outage itself lasts the issue's 30 s.

- The first wave of customers writes as the outage starts: their tasks
  use up their retries while PostgreSQL is still down, so they end in the
  dead-letter set with the database error, where the monitor (``celery -A
  tasks flower``) shows them, and its retry action runs them again.
- The second wave writes near the outage's end: its tasks fail, retry,
  and finish on their own after recovery.
- The webhook needs no database: it answers 200 all through the outage.

In the end every customer has exactly one reply, and nothing is lost.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from tests.support.celery_worker import CeleryWorker
from tests.support.customer_bodies import text_from
from tests.support.cuttable_proxy import CuttableProxy
from tests.support.fixtures import OFFLINE
from tests.support.monitor import Monitor
from tests.support.stack import Stack, claim_redis_db, release_redis_db
from tests.support.waiting import wait_for
from tests.support.worker_log import retries

#: The machine's Redis (the stack claims a database of its own on it).
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: The issue's outage, in seconds.
OUTAGE_S = 30.0
#: The runbook's 5, 10 and 20 s, divided by 5.
RETRY_DELAYS_S = (1.0, 2.0, 4.0)
#: Customers per wave (one message each).
WAVE = 8
#: The monitor's credentials (its API and actions need some).
MONITOR_AUTH = ("ops", "chaos-monitor-password")


def _proxied(db_url: str, port: int) -> str:
    return make_url(db_url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def postgres_proxy():
    with CuttableProxy(make_url(os.environ["DB_URL"]).port or 5432) as proxy:
        yield proxy


@dataclass
class Outage:
    stack: Stack
    monitor: Monitor


@pytest.fixture(scope="module")
def outage(engine, checkpoints, postgres_proxy, tmp_path_factory):
    """The stack, with PostgreSQL behind the proxy, and the monitor (``celery -A tasks
    flower``, with credentials) on the stack's Redis, started alongside it."""
    n = claim_redis_db(REDIS_BASE)
    log_dir = tmp_path_factory.mktemp("postgres-outage")
    redis_url = f"{REDIS_BASE}/{n}"
    monitor = CeleryWorker(["flower", "--port=0"], log_dir / "monitor.log",
                           env={"REDIS_URI": redis_url, "FLOWER_BASIC_AUTH": ":".join(MONITOR_AUTH)})
    try:
        stack = Stack(redis_url=redis_url, db_url=_proxied(os.environ["DB_URL"], postgres_proxy.port),
                      env={"RETRY_DELAYS_SECONDS": ",".join(f"{d:g}" for d in RETRY_DELAYS_S)}, log_dir=log_dir)
        try:
            yield Outage(stack, Monitor(monitor))
        finally:
            stack.stop()
    finally:
        monitor.kill_all()
        release_redis_db(REDIS_BASE, n)


@pytest.fixture
def monitor(outage):
    return outage.monitor


@pytest.fixture
def stack(outage, db):
    outage.stack.reset()
    yield outage.stack
    outage.stack.wait_idle()


def _customer(wave: str, i: int) -> str:
    return f"1555{'wab'.index(wave)}000{i:04d}"


def _post_wave(stack: Stack, wave: str) -> list[str]:
    customers = []
    for i in range(WAVE):
        customer = _customer(wave, i)
        answer = stack.post(text_from(customer, f"wamid.PGOUT{wave.upper()}{i:04d}", f"wave {wave} #{i}"))
        # The webhook needs Redis only: accepted with PostgreSQL down.
        assert (answer.status_code, answer.json().get("messages")) == (200, 1), answer.text
        customers.append(customer)
    return customers


def _retries(stack: Stack) -> list[tuple[str, float]]:
    """(task id, delay in s) of every retry of process_message_task the worker logged."""
    return retries(stack.log_dir)


def _replies(stack: Stack) -> Counter[str]:
    """Replies WhatsApp accepted, per customer."""
    return Counter(send["to"] for send in stack.sends())


def _dead_process_tasks(stack: Stack) -> dict[str, dict]:
    return {d["message_id"]: d for d in stack.dead_letters()
            if (d.get("message") or {}).get("actor_name") == "process_message_task"}


def test_a_30_s_postgres_outage_retries_dead_letters_what_outlived_it_and_loses_nothing(
        stack, postgres_proxy, monitor, figures):
    # Given a customer answered through the proxy (the pools hold live connections the cut will drop)
    warm = _customer("w", 0)
    assert stack.post(text_from(warm, "wamid.PGOUTWARM", "before")).status_code == 200
    wait_for(lambda: _replies(stack)[warm] == 1, timeout_s=60)
    stack.wait_idle()

    # When PostgreSQL goes away
    postgres_proxy.cut()
    cut_at = time.monotonic()
    try:
        # the first wave writes as it goes: accepted, and the operator API and /health say 503
        first = _post_wave(stack, "a")
        held = stack.operator("GET", warm)
        assert held.status_code == 503 and "database" in held.json()["title"].lower(), held.text
        # (/health keeps a probe's result for a second)
        health = wait_for(lambda: (r := stack.http.get("/health")).status_code == 503 and r, timeout_s=15)
        assert health.json()["database"] != "connected", health.text

        # Then the first wave's tasks retry at 1, 2 and 4 s and, still failing, are dead-lettered
        # (within the outage: its retries take 7 s, so they were not the runbook's 35 s)
        dead = wait_for(lambda: len(_dead_process_tasks(stack)) == WAVE and _dead_process_tasks(stack),
                        timeout_s=OUTAGE_S - 2, interval_s=0.1)
        assert sorted(d["message"]["args"][0] for d in dead.values()) == first
        for record in dead.values():
            assert "OperationalError" in record["error"] and record["traceback"], record
        retried = Counter(task for task, _ in _retries(stack))
        assert {task: retried[task] for task in dead} == {task: len(RETRY_DELAYS_S) for task in dead}
        assert sorted({delay for task, delay in _retries(stack) if task in dead}) == list(RETRY_DELAYS_S)

        # When a second wave writes in the outage's last seconds (the scenario's
        # schedule, not a wait for a result: its last retry is due after the 30 s)
        time.sleep(max(0.0, cut_at + OUTAGE_S - RETRY_DELAYS_S[-1] - time.monotonic()))
        second = _post_wave(stack, "b")
        # and its tasks have started failing, PostgreSQL comes back at 30 s.  (Not
        # waiting for each of them: a task whose first attempt comes late simply
        # fails less; waiting for it could let an early one use up its retries.)
        wait_for(lambda: {t for t, _ in _retries(stack)} - set(dead), timeout_s=60, interval_s=0.1)
        time.sleep(max(0.0, cut_at + OUTAGE_S - time.monotonic()))
    finally:
        postgres_proxy.restore()
    outage_s = time.monotonic() - cut_at

    # Then the second wave finishes on its own retries, and nothing more is dead-lettered
    wait_for(lambda: all(_replies(stack)[c] >= 1 for c in second), timeout_s=90, interval_s=0.1)
    assert set(_dead_process_tasks(stack)) == set(dead)
    second_retries = [(t, d) for t, d in _retries(stack) if t not in dead]
    assert second_retries and all(d in RETRY_DELAYS_S for _, d in second_retries)

    # And the monitor shows the dead letters with their error, on its page and in its API
    page = monitor.get("/dead", auth=MONITOR_AUTH)
    assert page.status == 200
    for task in dead:
        assert task in page.text
    assert "OperationalError" in page.text
    failures = monitor.get("/api/tasks?state=FAILURE", auth=MONITOR_AUTH)
    assert failures.status == 200, failures.text
    assert set(dead) <= set(failures.json), failures.text
    assert all("OperationalError" in (failures.json[t]["exception"] or "") for t in dead)

    # When an operator retries each from the monitor
    for task in dead:
        answer = monitor.post(f"/broker/dead/default/{task}/retry", auth=MONITOR_AUTH,
                              headers={"X-Monitor-Action": "1"})
        assert answer.status == 200 and answer.json["ok"], answer.text

    # Then they finish, and every customer has exactly one reply: none lost, none twice
    wait_for(lambda: all(_replies(stack)[c] >= 1 for c in first), timeout_s=90, interval_s=0.1)
    stack.wait_idle()
    replies = _replies(stack)
    customers = [warm, *first, *second]
    assert {c: replies[c] for c in customers} == {c: 1 for c in customers}
    assert sum(replies.values()) == len(customers)
    assert _dead_process_tasks(stack) == {} and stack.dead_letters() == []
    for customer in customers:
        messages = stack.history(customer)["messages"]
        assert [(m["author"], m["status"]) for m in messages][-1] == ("ai", "sent"), messages
        assert messages[-1]["text"].startswith(OFFLINE)
    figures(messages=len(customers), accepted_during_outage=2 * WAVE, retries_seen=len(_retries(stack)),
            dead_lettered=len(dead), retried_from_monitor=len(dead), replies=sum(replies.values()),
            duplicates=sum(n - 1 for n in replies.values() if n > 1),
            lost=sum(1 for c in customers if replies[c] == 0), outage_s=round(outage_s, 1),
            retry_delays_s=list(RETRY_DELAYS_S), connections_dropped=postgres_proxy.dropped)
