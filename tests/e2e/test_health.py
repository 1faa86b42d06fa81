"""``/health`` and ``/metrics`` of the running stack: gunicorn (two workers) and a real
``dramatiq actors`` node."""

from __future__ import annotations

import pytest

from tests.support.fixtures import OFFLINE, text_body
from tests.support.prometheus import samples_of
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def test_health_counts_the_running_worker_node_and_metrics_follow_a_conversation(stack):
    # Given the stack's one worker node (it beats within a couple of seconds of starting)
    health = wait_for(lambda: (r := stack.http.get("/health")).status_code == 200 and r.json(), timeout_s=30)
    assert {k: health[k] for k in ("status", "redis", "database", "celery", "queues")} == {
        "status": "healthy", "redis": "connected", "database": "connected", "celery": "1 worker(s) active",
        "queues": {"default": 0, "state": 0}}

    def samples() -> dict:
        return samples_of(stack.http.get("/metrics").text)

    accepted = ("assistant_webhook_requests_total", frozenset({("outcome", "accepted")}))
    before = samples()

    # When a customer writes and is answered
    assert stack.post(text_body("wamid.health-e2e-1", "are you there?")).status_code == 200
    [reply] = stack.wait_for_sends(1)
    assert reply["text"]["body"].startswith(OFFLINE)
    stack.wait_idle()

    # Then the web counted the request and the buffer check it sent, and sees the node and empty queues
    after = samples()
    assert after[accepted] - before.get(accepted, 0) == 1
    check = ("assistant_tasks_enqueued_total", frozenset({("task", "check_buffer_task")}))
    assert after[check] - before.get(check, 0) == 1
    assert after[("assistant_worker_nodes", frozenset())] == 1
    assert after[("assistant_queue_messages", frozenset({("queue", "default"), ("state", "waiting")}))] == 0
