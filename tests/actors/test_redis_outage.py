"""A Redis restart: workers reconnect by themselves and lose nothing Redis kept."""

from __future__ import annotations

import threading
import time

import dramatiq
import pytest
import redis
from dramatiq import Worker

from actors import keys
from actors.setup import build_broker
from app.config import Config
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import wait_for


@pytest.mark.slow
def test_a_worker_resumes_consuming_after_redis_restarts(tmp_path):
    server = PrivateRedis(tmp_path, password="pw")
    broker = build_broker(Config(redis_uri=server.url))
    done: list[str] = []
    actor = dramatiq.actor(lambda tag: done.append(tag), actor_name="record", broker=broker)
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        # Given a worker that has processed a message
        actor.send("before")
        wait_for(lambda: done == ["before"])

        # When Redis goes away for a while and comes back with its data
        server.stop()
        time.sleep(1.0)
        server.start()

        # Then messages sent afterwards are processed without restarting the worker
        wait_for(lambda: _send_ok(actor, "after"), timeout_s=10)
        wait_for(lambda: "after" in done)
    finally:
        worker.stop()
        broker.close()
        server.stop()


def _send_ok(actor, tag) -> bool:
    try:
        actor.send(tag)
        return True
    except dramatiq.errors.ConnectionClosed:
        return False


@pytest.mark.slow
def test_after_a_long_outage_live_workers_keep_their_messages(tmp_path, monkeypatch):
    # Given two live worker processes, each holding a message, on a Redis that keeps its data
    server = PrivateRedis(tmp_path, password="pw")
    timeout_ms = 6_000  # beats every 1 s, dead after 3 s of silence
    brokers = [build_broker(Config(redis_uri=server.url), heartbeat_timeout_ms=timeout_ms) for _ in range(2)]
    held = []
    try:
        for broker in brokers:
            dramatiq.actor(lambda: None, actor_name="hold", broker=broker)
        brokers[0].get_actor("hold").send()
        brokers[0].get_actor("hold").send()
        for broker in brokers:
            consumer = broker.consume("default", prefetch=1, timeout=100)
            held.append(wait_for(lambda consumer=consumer: next(consumer)))

        # When Redis is away for longer than the silence that means death,
        # and the second worker gets through a little after the first
        early, late = brokers
        real_heartbeat = late.heartbeat
        late_may_beat = threading.Event()

        def slow_heartbeat():
            if not late_may_beat.is_set():
                raise redis.ConnectionError("still reconnecting")
            real_heartbeat()

        monkeypatch.setattr(late, "heartbeat", slow_heartbeat)
        server.stop()
        time.sleep(3.5)
        server.start()
        client = redis.Redis.from_url(server.url)
        seconds, _ = client.time()
        wait_for(lambda: (client.zscore(keys.HEARTBEATS, early.broker_id) or 0) > seconds * 1000, timeout_s=5)
        time.sleep(0.1)
        late_may_beat.set()

        # Then no live worker's message is given back
        time.sleep(2.5)
        assert client.llen("celery") == 0
        assert [client.llen(m.inflight_key) for m in held] == [1, 1]
        client.close()
    finally:
        for broker in brokers:
            broker.close()
        server.stop()


@pytest.mark.slow
def test_an_idle_worker_sends_only_a_few_commands_per_second(tmp_path):
    # Given an idle worker (both queues) alone on its own Redis server
    server = PrivateRedis(tmp_path, password="pw")
    broker = build_broker(Config(redis_uri=server.url))
    dramatiq.actor(lambda: None, actor_name="a", queue_name="default", broker=broker)
    dramatiq.actor(lambda: None, actor_name="b", queue_name="state", broker=broker)
    worker = Worker(broker, worker_threads=8)  # Dramatiq's default 1 s worker timeout
    worker.start()
    client = redis.Redis.from_url(server.url)
    try:
        time.sleep(1.5)
        client.config_resetstat()
        started = time.monotonic()
        time.sleep(3)
        stats = client.info("commandstats")
        elapsed = time.monotonic() - started
    finally:
        worker.stop()
        broker.close()
        client.close()
        server.stop()
    # Then it sends a few commands a second (stock Dramatiq's polling consumer sends ~30)
    calls = sum(v["calls"] for k, v in stats.items() if not k.startswith(("cmdstat_config", "cmdstat_info")))
    assert calls / elapsed < 8, stats
