"""Scenario 2: Redis goes away under webhook load, twice (a crash, then a clean
restart), and comes back on the same port with its append-only file.

A real stack (gunicorn with 2 workers, ``dramatiq actors``, the WhatsApp
stand-in, the offline model) runs on a private redis-server with
``appendonly yes`` and ``appendfsync always``: Redis answers a write only
once it is on disk, so a webhook answered 200 survives even a SIGKILL.
Meta is played by a thread that posts signed messages, each from a customer
of its own (one message, one reply), at a steady pace throughout, and
sends again, as Meta does, every body that was not answered 200.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.db.models import Message
from tests.support.fixtures import sign, text_body, value_of
from tests.support.redis_server import PrivateRedis
from tests.support.stack import Stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

#: Seconds between two posts of the load thread (about 10 a second: the
#: worker keeps up on this shared machine, so the backlog stays short).
PACE_S = 0.1
#: Seconds Redis stays down while the load keeps posting.
OUTAGE_S = 2.5
#: Answers of each kind a phase waits for before it moves on.
PHASE_ANSWERS = 10


@dataclass
class Attempt:
    n: int
    #: The HTTP status, or 0 when no answer came (connection refused, timeout).
    status: int
    #: The 503's JSON reason (Falcon's title and description), else None.
    reason: dict | None
    at: float


def wamid(n: int) -> str:
    return f"wamid.CHAOS-REDIS-{n:06d}"


def customer(n: int) -> str:
    return f"1999{n:07d}"


def message_body(n: int) -> bytes:
    """text.json as message ``n`` of customer ``n`` (phone number and business-scoped user id)."""
    body = json.loads(text_body(wamid(n), f"chaos message {n:06d}", wa_id=customer(n)))
    value_of(body)["contacts"][0]["user_id"] = f"US.CHAOS{n:06d}"
    return json.dumps(body).encode()


def post(http: httpx.Client, n: int) -> Attempt:
    """Meta's delivery of message ``n``: a signed body, one message, a customer of its own."""
    body = message_body(n)
    try:
        response = http.post("/webhook", content=body,
                             headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)})
    except httpx.TransportError:
        return Attempt(n, 0, None, time.monotonic())
    reason = response.json() if response.status_code == 503 else None
    return Attempt(n, response.status_code, reason, time.monotonic())


class MetaLoad(threading.Thread):
    """Posts message 1, 2, 3... every PACE_S until stopped; keeps every answer."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=url, timeout=30)
        self.attempts: list[Attempt] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            self.attempts.append(post(self.http, n))
            self.stopping.wait(PACE_S)

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)
        assert not self.is_alive()

    def count(self, status: int, since: float = 0.0) -> int:
        return sum(1 for a in list(self.attempts) if a.status == status and a.at >= since)


def outage(server: PrivateRedis, load: MetaLoad, stack: Stack, end: Callable[[], None]) -> float:
    """Take Redis away with ``end`` while the load posts, bring it back on the same
    port and folder; returns the outage's length in seconds."""
    wait_for(lambda: load.count(200, since=time.monotonic() - 60) >= PHASE_ANSWERS, timeout_s=120)
    began = time.monotonic()
    end()
    # The load keeps posting: a few seconds, and enough 503s seen.
    wait_for(lambda: load.count(503, since=began) >= 10, timeout_s=60)
    # (/health says so too, once its one-second cached answer is gone)
    wait_for(lambda: (lambda r: r.status_code == 503 and r.json()["redis"].startswith("unavailable"))(
        stack.http.get("/health")), timeout_s=30, interval_s=0.2)
    wait_for(lambda: time.monotonic() - began >= OUTAGE_S, timeout_s=60)
    server.start()
    length = time.monotonic() - began
    back = time.monotonic()
    wait_for(lambda: load.count(200, since=back) >= PHASE_ANSWERS, timeout_s=120)
    return length


def worker_pids(stack: Stack) -> list[int]:
    """The ``dramatiq actors`` main process and its children."""
    [proc] = [p for name, p in stack.procs if name == "worker"]
    assert proc.poll() is None, f"the worker exited with {proc.returncode}:\n{stack.logs()}"
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return [proc.pid, *sorted(int(c) for c in children)]


def test_a_redis_crash_and_a_clean_restart_under_load_lose_no_acknowledged_message(db, tmp_path, figures):
    # Given a stack on a private Redis that writes every change to its append-only file before answering
    (tmp_path / "redis").mkdir()
    server = PrivateRedis(tmp_path / "redis", password="chaos-redis-pw")
    try:
        stack = Stack(redis_url=server.url, db_url=os.environ["DB_URL"], log_dir=tmp_path)
        try:
            wait_for(lambda: stack.http.get("/health").status_code == 200, timeout_s=120, interval_s=0.2)
            workers_before = worker_pids(stack)
            load = MetaLoad(stack.url)
            load.start()
            try:
                # When Redis is killed (SIGKILL) and, later, shut down cleanly, under load
                crash_s = outage(server, load, stack, server.kill)
                clean_s = outage(server, load, stack, server.stop)
            finally:
                load.stop()
            first = load.attempts

            # (Meta sends every body not answered 200 again, until it is)
            redelivered = [a.n for a in first if a.status != 200]
            for n in redelivered:
                wait_for(lambda n=n: post(load.http, n).status == 200, timeout_s=60, interval_s=0.2)

            # Then every message is answered exactly once, by the worker that ran throughout
            posted = len(first)
            stack.wait_for_sends(posted, timeout_s=180)
            stack.wait_idle(timeout_s=120)
            replies = Counter(send["to"] for send in stack.sends())
            with db() as session:
                stored = Counter(session.scalars(select(Message.wamid).where(Message.author == "customer")))
            lost = [n for n in range(1, posted + 1) if replies[customer(n)] == 0 or stored[wamid(n)] == 0]
            duplicates = [n for n in range(1, posted + 1) if replies[customer(n)] > 1]
            acknowledged = [a.n for a in first if a.status == 200]
            statuses = Counter(a.status for a in first)
            figures(posted=posted, status_200=statuses[200], status_503=statuses[503],
                    other=posted - statuses[200] - statuses[503], redelivered=len(redelivered),
                    processed=sum(1 for n in range(1, posted + 1) if replies[customer(n)]),
                    lost=len(lost), duplicates=len(duplicates),
                    acknowledged_then_lost=len(set(acknowledged) & set(lost)),
                    crash_outage_s=round(crash_s, 2), clean_outage_s=round(clean_s, 2))
            assert (lost, duplicates) == ([], []), stack.logs()
            assert len(replies) == posted and sum(stored.values()) == posted
            # Answers during the outages were 503s with a reason (Meta retries those), never anything else
            assert statuses[503] >= 20 and set(statuses) == {200, 503}, statuses
            for attempt in first:
                if attempt.status == 503:
                    assert attempt.reason and attempt.reason["title"] and attempt.reason["description"], attempt
            # Nothing left waiting, delayed, in flight or dead-lettered, no conversation left locked
            assert stack.dead_letters() == [] and stack.redis.keys("app:lock:*") == []
            assert worker_pids(stack) == workers_before
        finally:
            stack.stop()
    finally:
        if server.proc.poll() is None:
            server.stop()
