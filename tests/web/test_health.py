"""``GET /health``: DESIGN's JSON, 200 only when Redis, the database and a worker node answer.

Real Redis (the run's private database) and PostgreSQL; a hung service is a
TCP listener that accepts and never answers.
"""

from __future__ import annotations

import json
import time

from actors import registry
from app.web.probes import describe_error
from tests.support.redis_server import free_port
from tests.support.silent_server import SilentServer

#: A generous bound for "answers instead of hanging" (the probes' deadline is 0.8 s).
ANSWERS_WITHIN_S = 3.0

REDIS_PASSWORD = "redis-pw-6b1f0c"
DB_PASSWORD = "db-pw-93ad27"
SECRETS = {"whatsapp_token": "wa-token-5e8c1d", "whatsapp_app_secret": "app-secret-0f4e2b",
           "whatsapp_verify_token": "verify-token-7c3a9e", "operator_token": "operator-token-1d6b4f",
           "google_api_key": "google-key-2a7e5c"}


def timed_get(client, path="/health"):
    started = time.monotonic()
    result = client.simulate_get(path)
    return result, time.monotonic() - started


def test_with_a_live_node_health_answers_200_with_designs_exact_json(health_client, beating, redis_client,
                                                                       global_broker):
    # Given one live node, and one message waiting in each queue's runbook list
    import wsgi

    beating("worker1@vm", info={"name": "worker1@vm", "pool": "prefork", "concurrency": 4}, processes={101: {}})
    wsgi.enqueue("update_message_status_task", ({"id": "wamid.X", "status": "sent"},))
    wsgi.enqueue("update_langgraph_state_task", ("16505551234", {"human_active": True}))
    wsgi.enqueue("check_buffer_task", ("16505551234", 1), countdown=60)
    assert (redis_client.llen("celery"), redis_client.llen("state")) == (1, 1)

    # When /health is asked
    result = health_client().simulate_get("/health")

    # Then it is DESIGN's JSON, the waiting messages counted as LLEN counts them
    assert result.status_code == 200
    body = result.json
    assert {k: body[k] for k in ("status", "redis", "database", "celery", "queues")} == {
        "status": "healthy", "redis": "connected", "database": "connected", "celery": "1 worker(s) active",
        "queues": {"default": 1, "state": 1}}
    assert list(body)[:5] == ["status", "redis", "database", "celery", "queues"]
    assert body["queue_details"]["default"] == {"waiting": 1, "delayed": 1, "inflight": 0, "dead": 0}
    assert result.headers["content-type"].startswith("application/json")
    assert result.headers["cache-control"] == "no-store"


def test_nodes_are_counted_not_processes(health_client, beating):
    beating("worker1@vm", processes={101: {}, 102: {}, 103: {}})
    beating("worker2@vm", processes={201: {}})

    result = health_client().simulate_get("/health")

    assert (result.status_code, result.json["celery"]) == (200, "2 worker(s) active")


def test_with_no_worker_node_health_is_503_with_0_workers_active(health_client, redis_client):
    result = health_client().simulate_get("/health")

    assert result.status_code == 503
    assert result.json == {
        "status": "unhealthy", "redis": "connected", "database": "connected", "celery": "0 worker(s) active",
        "queues": {"default": 0, "state": 0},
        "queue_details": {q: {"waiting": 0, "delayed": 0, "inflight": 0, "dead": 0} for q in ("default", "state")}}


def test_a_node_that_stopped_beating_no_longer_counts(health_client, redis_client):
    # Given a node whose last beat is older than MISSED_BEATS intervals
    registry.beat(redis_client, "gone@vm", processes={1: {}}, interval_s=0.05)
    time.sleep(0.3)

    result = health_client().simulate_get("/health")

    assert (result.status_code, result.json["celery"]) == (503, "0 worker(s) active")


def test_head_health_answers_the_same_status_without_a_body(health_client, beating):
    client = health_client()
    assert client.simulate_head("/health").status_code == 503
    beating("worker1@vm", processes={1: {}})
    result = client.simulate_head("/health")
    assert (result.status_code, result.content) == (200, b"")


def test_redis_down_is_503_naming_redis_with_no_password_shown(health_client, beating):
    beating("worker1@vm", processes={1: {}})  # (on the real Redis, which this app does not reach)
    port = free_port()

    result, took = timed_get(health_client(redis_uri=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"))

    assert took < ANSWERS_WITHIN_S
    assert result.status_code == 503
    body = result.json
    assert body["status"] == "unhealthy" and body["database"] == "connected"
    assert body["redis"].startswith("unavailable: ") and "Connection refused" in body["redis"], body
    assert body["celery"] == "unknown: redis unavailable"
    assert body["queues"] == {"default": None, "state": None}
    assert REDIS_PASSWORD not in result.text


def test_a_redis_refusing_the_password_is_503_and_the_password_is_not_shown(health_client, beating, redis_url):
    beating("worker1@vm", processes={1: {}})
    # The machine's Redis has no such user: AUTH fails (WRONGPASS).
    uri = redis_url.replace("redis://", f"redis://nobody:{REDIS_PASSWORD}@")

    result = health_client(redis_uri=uri).simulate_get("/health")

    assert result.status_code == 503
    assert result.json["redis"] == "unavailable: invalid username-password pair or user is disabled."
    assert REDIS_PASSWORD not in result.text


def test_a_hanging_redis_is_503_within_a_second_or_so_naming_redis(health_client, beating):
    beating("worker1@vm", processes={1: {}})
    with SilentServer() as hung:
        result, took = timed_get(health_client(redis_uri=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{hung.port}/0"))

        assert hung.accepted >= 1  # it really connected, and then heard nothing
    assert took < ANSWERS_WITHIN_S
    assert result.status_code == 503
    assert result.json["redis"] == "unavailable: timed out after 0.8 s"
    assert result.json["database"] == "connected"
    assert REDIS_PASSWORD not in result.text


def test_a_hanging_database_is_503_within_a_second_or_so_naming_the_database(health_client, beating):
    beating("worker1@vm", processes={1: {}})
    with SilentServer() as hung:
        client = health_client(db_url=f"postgresql://assistant:{DB_PASSWORD}@127.0.0.1:{hung.port}/assistant")
        result, took = timed_get(client)

        assert hung.accepted >= 1
    assert took < ANSWERS_WITHIN_S
    assert result.status_code == 503
    assert result.json["database"] == "unavailable: timed out after 0.8 s"
    assert (result.json["redis"], result.json["celery"]) == ("connected", "1 worker(s) active")
    assert DB_PASSWORD not in result.text


def test_a_database_refusing_connections_is_503_with_the_reason_and_no_password(health_client, beating):
    beating("worker1@vm", processes={1: {}})
    port = free_port()

    result = health_client(db_url=f"postgresql://assistant:{DB_PASSWORD}@127.0.0.1:{port}/assistant"
                           ).simulate_get("/health")

    assert result.status_code == 503
    assert result.json["database"].startswith("unavailable: ") and "refused" in result.json["database"]
    assert DB_PASSWORD not in result.text and "sqlalche.me" not in result.text


def test_both_stores_hanging_still_answer_within_the_bound(health_client):
    with SilentServer() as redis_hung, SilentServer() as pg_hung:
        client = health_client(redis_uri=f"redis://127.0.0.1:{redis_hung.port}/0",
                               db_url=f"postgresql://assistant@127.0.0.1:{pg_hung.port}/assistant")
        result, took = timed_get(client)
    assert took < ANSWERS_WITHIN_S
    assert result.status_code == 503
    assert result.json["redis"].startswith("unavailable: timed out")
    assert result.json["database"].startswith("unavailable: timed out")


def test_requests_to_a_hanging_store_share_one_stuck_probe_instead_of_piling_up(health_client):
    # Given a database that hangs, asked about five times in a row
    with SilentServer() as hung:
        client = health_client(db_url=f"postgresql://assistant@127.0.0.1:{hung.port}/assistant")
        for _ in range(5):
            result, took = timed_get(client)
            assert (result.status_code, took < ANSWERS_WITHIN_S) == (503, True)
        # Then one connection attempt hangs at a time, not one per request
        assert hung.accepted <= 2


def test_no_secret_of_the_config_appears_in_the_health_answer(health_client, beating, redis_url):
    beating("worker1@vm", processes={1: {}})
    redis_uri = redis_url.replace("redis://", f"redis://:{REDIS_PASSWORD}@")
    with SilentServer() as hung:
        result = health_client(redis_uri=redis_uri, db_url=f"postgresql://app:{DB_PASSWORD}@127.0.0.1:{hung.port}/x",
                               **SECRETS).simulate_get("/health")
    assert result.status_code == 503
    for secret in [REDIS_PASSWORD, DB_PASSWORD, *SECRETS.values()]:
        assert secret not in result.text
    assert "redis://" not in result.text and "postgresql" not in result.text


def test_an_error_text_is_cut_and_loses_url_credentials_and_known_secrets():
    error = ConnectionError("could not reach redis://user:hunter2@10.0.0.5:6379/0 with token tok-123 " + "x" * 400)

    text = describe_error(error, ["tok-123"])

    assert "hunter2" not in text and "tok-123" not in text
    assert "redis://user:**@10.0.0.5:6379/0" in text
    assert len(text) <= 200


def test_the_database_may_be_sqlite(health_client, beating, tmp_path):
    beating("worker1@vm", processes={1: {}})
    result = health_client(db_url=f"sqlite:///{tmp_path / 'health.sqlite3'}").simulate_get("/health")
    assert (result.status_code, result.json["database"]) == (200, "connected")


def test_without_a_broker_probe_the_workers_are_unknown_and_health_is_503(make_client):
    result = make_client().simulate_get("/health")
    assert result.status_code == 503
    assert result.json["celery"].startswith("unknown")
    assert json.loads(result.text)["database"] == "connected"


def test_a_change_of_health_is_logged_once_with_the_failing_part(health_client, beating, caplog):
    client = health_client()
    with caplog.at_level("INFO", logger="app.web.health"):
        for _ in range(3):
            assert client.simulate_get("/health").status_code == 503
        beating("worker1@vm", processes={1: {}})
        for _ in range(2):
            assert client.simulate_get("/health").status_code == 200
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Health is unhealthy: redis connected, database connected, celery 0 worker(s) active."),
        ("INFO", "Health is healthy: 1 worker(s) active.")]
