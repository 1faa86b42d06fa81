"""A Redis restart: workers reconnect by themselves and lose nothing Redis kept."""

from __future__ import annotations

import time

import dramatiq
import pytest
from dramatiq import Worker

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
