"""The web app's ``GET /metrics``: Prometheus text, parsed as Prometheus parses it.

The counters live in this test process (no multiprocess directory here), so
each test compares what it reads before and after its own requests.
"""

from __future__ import annotations

import json

from tests.support.fixtures import raw, sign, text_body
from tests.support.prometheus import Samples, samples_of
from tests.support.redis_server import free_port
from tests.support.silent_server import SilentServer
from tests.support.waiting import wait_for


def scrape(client) -> Samples:
    """Every sample of ``/metrics``, keyed by (sample name, labels)."""
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples_of(result.text)


def sample(samples, name, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def requests(samples, outcome) -> float:
    return sample(samples, "assistant_webhook_requests_total", outcome=outcome) or 0.0


def post(client, body: bytes, *, signature: str | None = None):
    headers = {"X-Hub-Signature-256": sign(body) if signature is None else signature}
    return client.simulate_post("/webhook", body=body, headers=headers)


OUTCOMES = ("accepted", "duplicate", "partial", "unreadable", "unsigned", "too_large", "unavailable",
            "unconfigured", "verified", "verify_refused", "bad_request", "error")


def test_webhook_outcomes_latency_and_enqueued_tasks_are_counted(client, enqueue, redis_client):
    # Given what /metrics shows now
    before = scrape(client)
    assert all(sample(before, "assistant_webhook_requests_total", outcome=o) is not None for o in OUTCOMES)

    # When Meta sends a new message, the same one again, a status, a poison body, a half-poison
    # body, an unsigned body and an oversized one
    message = text_body("wamid.metrics-1", "hello")
    assert post(client, message).json["messages"] == 1
    assert post(client, message).json["duplicates"] == 1
    assert post(client, raw("status_sent.json")).status_code == 200
    assert post(client, b"{not json").json["status"] == "rejected"
    half = json.loads(text_body("wamid.metrics-2", "hi"))
    half["entry"][0]["changes"][0]["value"]["messages"].append({"id": "wamid.metrics-3", "type": "text"})
    half_body = json.dumps(half).encode()
    assert post(client, half_body).json["problems"] == 1
    assert post(client, message, signature="sha256=00").status_code == 401
    assert post(client, b"x" * (5 * 1024 * 1024)).status_code == 413
    after = scrape(client)

    # Then each outcome moved by exactly its requests, the latency histogram by all seven
    moved = {o: requests(after, o) - requests(before, o) for o in OUTCOMES}
    assert moved == {"accepted": 2, "duplicate": 1, "partial": 1, "unreadable": 1, "unsigned": 1, "too_large": 1,
                     "unavailable": 0, "unconfigured": 0, "verified": 0, "verify_refused": 0, "bad_request": 0,
                     "error": 0}
    count = "assistant_webhook_request_duration_seconds_count"
    assert sample(after, count) - sample(before, count) == 7
    assert sample(after, "assistant_webhook_request_duration_seconds_bucket", le="+Inf") == sample(after, count)
    # and the enqueued tasks by runbook name: three buffer checks (the new message, the duplicate's
    # conversation still buffered, the half body) and one status, as the queue received them
    enqueued = "assistant_tasks_enqueued_total"
    sent = {task: len(enqueue.named(task)) for task in ("check_buffer_task", "update_message_status_task")}
    assert sent == {"check_buffer_task": 3, "update_message_status_task": 1}
    for task, count in sent.items():
        assert (sample(after, enqueued, task=task) or 0) - (sample(before, enqueued, task=task) or 0) == count


def test_a_task_the_queue_refused_is_not_counted_as_enqueued_and_the_request_is_unavailable(client, enqueue):
    enqueue.fail_on.add("update_message_status_task")
    before = scrape(client)

    assert post(client, raw("status_sent.json")).status_code == 503

    after = scrape(client)
    assert requests(after, "unavailable") - requests(before, "unavailable") == 1
    assert sample(after, "assistant_tasks_enqueued_total", task="update_message_status_task") == sample(
        before, "assistant_tasks_enqueued_total", task="update_message_status_task")


def test_the_verification_handshake_and_a_missing_app_secret_are_told_apart(make_client):
    from tests.web.conftest import VERIFY_TOKEN

    client = make_client()
    before = scrape(client)
    ok = client.simulate_get("/webhook", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                                                 "hub.challenge": "42"})
    wrong = client.simulate_get("/webhook", params={"hub.mode": "subscribe", "hub.verify_token": "nope",
                                                    "hub.challenge": "42"})
    assert (ok.status_code, wrong.status_code) == (200, 403)
    unconfigured = make_client(whatsapp_app_secret=None)
    assert post(unconfigured, raw("text.json")).status_code == 503

    after = scrape(client)
    assert {o: requests(after, o) - requests(before, o) for o in ("verified", "verify_refused", "unconfigured",
                                                                   "unavailable")} == {
        "verified": 1, "verify_refused": 1, "unconfigured": 1, "unavailable": 0}


class _BuggyStore:
    """A Redis client stand-in whose every call fails as a bug would (not as a RedisError)."""

    def __getattr__(self, name):
        raise RuntimeError(f"bug: {name}")


def test_a_wrong_method_is_a_bad_request_and_a_server_error_is_an_error(client, web_config, enqueue, db):
    import falcon.testing

    from app.web import create_app

    before = scrape(client)

    # When a scanner tries PUT and DELETE, and a bug breaks a real post
    assert client.simulate_put("/webhook", body=b"{}").status_code == 405
    assert client.simulate_delete("/webhook").status_code == 405
    buggy = falcon.testing.TestClient(create_app(web_config, enqueue=enqueue, redis_client=_BuggyStore(),
                                                 sessions=db))
    assert post(buggy, text_body("wamid.bug-1", "hi")).status_code == 500

    after = scrape(client)
    assert {o: requests(after, o) - requests(before, o) for o in ("bad_request", "error")} == {
        "bad_request": 2, "error": 1}


def test_queue_depth_and_worker_nodes_are_read_from_redis_at_scrape_time(health_client, beating, global_broker):
    import wsgi

    client = health_client()
    # Given nothing in the queues and no node
    empty = scrape(client)
    assert sample(empty, "assistant_redis_up") == 1
    assert sample(empty, "assistant_database_up") == 1
    assert sample(empty, "assistant_worker_nodes") == 0
    assert sample(empty, "assistant_queue_messages", queue="default", state="waiting") == 0

    # When two nodes beat and messages wait, one delayed
    beating("worker1@vm", processes={1: {}})
    beating("worker2@vm", processes={2: {}})
    wsgi.enqueue("update_message_status_task", ({"id": "wamid.A", "status": "sent"},))
    wsgi.enqueue("update_message_status_task", ({"id": "wamid.B", "status": "sent"},))
    wsgi.enqueue("update_langgraph_state_task", ("16505551234", {"human_active": True}))
    wsgi.enqueue("check_buffer_task", ("16505551234", 1), countdown=60)

    # Then a scrape shows them, per queue and state, once the probe's cached second is over
    samples = wait_for(lambda: sample(s := scrape(client), "assistant_worker_nodes") == 2 and s)
    queues = {(q, s): sample(samples, "assistant_queue_messages", queue=q, state=s)
              for q in ("default", "state") for s in ("waiting", "delayed", "inflight", "dead")}
    assert queues == {("default", "waiting"): 2, ("default", "delayed"): 1, ("default", "inflight"): 0,
                      ("default", "dead"): 0, ("state", "waiting"): 1, ("state", "delayed"): 0,
                      ("state", "inflight"): 0, ("state", "dead"): 0}


def test_with_redis_down_metrics_still_answers_with_redis_up_0_and_no_queue_samples(health_client):
    client = health_client(redis_uri=f"redis://:pw-4c1e@127.0.0.1:{free_port()}/0")

    result = client.simulate_get("/metrics")

    assert result.status_code == 200
    samples = scrape(client)
    assert sample(samples, "assistant_redis_up") == 0
    assert not any(name in ("assistant_queue_messages", "assistant_worker_nodes") for name, _ in samples)
    assert requests(samples, "accepted") is not None  # the counted metrics are still there
    assert "pw-4c1e" not in result.text


def test_with_the_database_hanging_metrics_answers_with_database_up_0(health_client):
    with SilentServer() as hung:
        client = health_client(db_url=f"postgresql://assistant@127.0.0.1:{hung.port}/assistant")
        samples = scrape(client)
    assert (sample(samples, "assistant_database_up"), sample(samples, "assistant_redis_up")) == (0, 1)


def test_with_redis_hanging_metrics_answers_within_the_bound(health_client):
    import time

    with SilentServer() as hung:
        client = health_client(redis_uri=f"redis://127.0.0.1:{hung.port}/0")
        started = time.monotonic()
        samples = scrape(client)
        took = time.monotonic() - started
    assert took < 3.0
    assert sample(samples, "assistant_redis_up") == 0
