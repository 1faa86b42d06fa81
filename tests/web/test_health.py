"""``GET /health``: DESIGN's JSON, 200 only when Redis, the database and a worker node answer.

Real Redis (the run's private database) and PostgreSQL; a hung service is a
TCP listener that accepts and never answers.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import urlsplit

import falcon.testing

from actors import registry
from app.web import create_app
from tests.support.redis_server import free_port
from tests.support.silent_server import SilentServer
from tests.support.stalling_proxy import StallingProxy
from tests.support.waiting import wait_for

#: A generous bound for "answers instead of hanging" (the probes' deadline is 0.8 s;
#: test_probes.py holds the resource to its own deadline more tightly).
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
    # (the probes' results are reused for a second)
    result = wait_for(lambda: (r := client.simulate_head("/health")).status_code == 200 and r)
    assert result.content == b""


def test_redis_down_is_503_naming_redis_with_no_password_shown(health_client, beating):
    beating("worker1@vm", processes={1: {}})  # (on the real Redis, which this app does not reach)
    port = free_port()

    result, took = timed_get(health_client(redis_uri=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"))

    assert took < ANSWERS_WITHIN_S
    assert result.status_code == 503
    body = result.json
    assert body["status"] == "unhealthy" and body["database"] == "connected"
    assert body["redis"] == "unavailable: refused", body
    assert body["celery"] == "unknown: redis unavailable"
    assert body["queues"] == {"default": None, "state": None}
    assert REDIS_PASSWORD not in result.text
    # The public port shows a category, not the address the error text names
    assert "127.0.0.1" not in result.text and str(port) not in result.text


def test_a_redis_refusing_the_password_is_503_and_the_password_is_not_shown(health_client, beating, redis_url):
    beating("worker1@vm", processes={1: {}})
    # The machine's Redis has no such user: AUTH fails (WRONGPASS).
    uri = redis_url.replace("redis://", f"redis://nobody:{REDIS_PASSWORD}@")

    result = health_client(redis_uri=uri).simulate_get("/health")

    assert result.status_code == 503
    assert result.json["redis"] == "unavailable: authentication failed"
    assert REDIS_PASSWORD not in result.text and "nobody" not in result.text


def test_a_hanging_redis_is_503_within_a_second_or_so_naming_redis(health_client, beating):
    beating("worker1@vm", processes={1: {}})
    with SilentServer() as hung:
        result, took = timed_get(health_client(redis_uri=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{hung.port}/0"))

        assert hung.accepted >= 1  # it really connected, and then heard nothing
    assert took < ANSWERS_WITHIN_S
    assert result.status_code == 503
    assert result.json["redis"] == "unavailable: timed out"
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
    assert result.json["database"] == "unavailable: timed out"
    assert (result.json["redis"], result.json["celery"]) == ("connected", "1 worker(s) active")
    assert DB_PASSWORD not in result.text


def test_a_database_refusing_connections_is_503_with_the_reason_and_no_password(health_client, beating):
    beating("worker1@vm", processes={1: {}})
    port = free_port()

    result = health_client(db_url=f"postgresql://assistant:{DB_PASSWORD}@127.0.0.1:{port}/assistant"
                           ).simulate_get("/health")

    assert result.status_code == 503
    assert result.json["database"] == "unavailable: refused"
    assert DB_PASSWORD not in result.text and "sqlalche.me" not in result.text and "assistant" not in result.text


def test_both_stores_hanging_still_answer_within_the_bound(health_client):
    with SilentServer() as redis_hung, SilentServer() as pg_hung:
        client = health_client(redis_uri=f"redis://127.0.0.1:{redis_hung.port}/0",
                               db_url=f"postgresql://assistant@127.0.0.1:{pg_hung.port}/assistant")
        result, took = timed_get(client)
    assert took < ANSWERS_WITHIN_S
    assert result.status_code == 503
    assert result.json["redis"] == "unavailable: timed out"
    assert result.json["database"] == "unavailable: timed out"


def test_a_database_connection_that_stalls_after_connecting_does_not_keep_health_failing(health_client, beating):
    # Given the database behind a proxy, healthy
    beating("worker1@vm", processes={1: {}})
    real = urlsplit(os.environ["DB_URL"])
    with StallingProxy(real.port or 5432) as proxy:
        proxied = real._replace(netloc=f"{real.username}@127.0.0.1:{proxy.port}", query="sslmode=disable").geturl()
        client = health_client(db_url=proxied)
        assert client.simulate_get("/health").status_code == 200

        # When the network swallows the probe's query (connected, then silence), health fails
        proxy.stall.set()
        failing = wait_for(lambda: (r := client.simulate_get("/health")).status_code == 503 and r.json,
                           timeout_s=15)
        assert failing["database"] == "unavailable: timed out"
        assert proxy.swallowed >= 1

        # When the network comes back, health recovers although the swallowed query is never answered
        proxy.stall.clear()
        healthy = wait_for(lambda: (r := client.simulate_get("/health")).status_code == 200 and r.json,
                           timeout_s=15, interval_s=0.2)
        assert healthy["database"] == "connected"


def test_health_and_metrics_asked_together_share_one_probe_of_redis(web_config, enqueue, redis_client, db,
                                                                       beating):
    # Given the app with a broker probe that counts its reads
    from actors.health import BrokerHealth
    from actors.periodic import QUEUES

    broker = BrokerHealth(web_config)
    reads = []

    def counted():
        reads.append(1)
        return broker()

    client = falcon.testing.TestClient(create_app(web_config, enqueue=enqueue, health=counted, queues=QUEUES,
                                                  redis_client=redis_client, sessions=db))
    beating("worker1@vm", processes={1: {}})
    try:
        # When /health, /metrics and /health again are asked at once
        health = client.simulate_get("/health")
        metrics = client.simulate_get("/metrics")
        again = client.simulate_get("/health")
    finally:
        broker.close()

    # Then Redis was read once, and both endpoints say the same
    assert len(reads) == 1
    assert (health.status_code, again.json) == (200, health.json)
    assert "assistant_worker_nodes 1.0" in metrics.text and "assistant_database_up 1.0" in metrics.text


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
        wait_for(lambda: client.simulate_get("/health").status_code == 200)
        assert client.simulate_get("/health").status_code == 200
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Health is unhealthy: redis connected, database connected, celery 0 worker(s) active."),
        ("INFO", "Health is healthy: 1 worker(s) active.")]


def test_the_log_gets_the_full_reason_without_secrets_and_the_answer_only_its_category(health_client, caplog):
    port = free_port()
    client = health_client(redis_uri=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0")
    with caplog.at_level("INFO", logger="app.web.health"):
        result = client.simulate_get("/health")
    assert result.json["redis"] == "unavailable: refused"
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert f"redis unavailable: refused (Error 111 connecting to 127.0.0.1:{port}. Connection refused.)" in (
        record.getMessage())
    assert REDIS_PASSWORD not in record.getMessage()
