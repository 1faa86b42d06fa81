"""The benchmarks' worker module for stock Dramatiq: ``dramatiq.brokers.redis.RedisBroker``.

    BENCH_REDIS_URL=redis://... dramatiq bench.stock_dramatiq_app -p 2 -t 8 -Q default state

The same four tasks as ``bench.noop_app``, with Dramatiq's default
middleware.  Stock Dramatiq has no queue priority: the state actor gets
the most urgent actor priority (0), which orders the work a worker
already holds, as its documentation offers.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
broker = RedisBroker(url=REDIS_URL)
dramatiq.set_broker(broker)
_client = redis.Redis.from_url(REDIS_URL)

LATENCY_KEY = "bench:latency_ms"
STATE_LATENCY_KEY = "bench:state_latency_ms"


@dramatiq.actor(queue_name="default", priority=5, actor_name="bench_stamp")
def bench_stamp(sent_at_ms: float) -> None:
    _client.rpush(LATENCY_KEY, time.time() * 1000 - sent_at_ms)


@dramatiq.actor(queue_name="state", priority=0, actor_name="bench_state_stamp")
def bench_state_stamp(sent_at_ms: float) -> None:
    _client.rpush(STATE_LATENCY_KEY, time.time() * 1000 - sent_at_ms)


@dramatiq.actor(queue_name="default", priority=5, actor_name="bench_noop")
def bench_noop(payload: str) -> None:
    pass


@dramatiq.actor(queue_name="default", priority=5, actor_name="bench_bulk")
def bench_bulk(payload: str) -> None:
    time.sleep(0.01)
