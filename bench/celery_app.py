"""The benchmarks' worker module for Celery 5.7 on its Redis transport.

    BENCH_REDIS_URL=redis://... python -m celery -A bench.celery_app worker -P prefork -c 2 -Q celery,state

The same four tasks as ``bench.noop_app``; the state task is routed to
the ``state`` queue, everything else to Celery's default ``celery``.
Celery's own defaults otherwise (prefetch multiplier 4, early ack,
gossip, mingle and heartbeats on), as the runbook's deployment ran it.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_default_queue="celery",
    task_routes={"bench_state_stamp": {"queue": "state"}},
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_client = redis.Redis.from_url(REDIS_URL)

LATENCY_KEY = "bench:latency_ms"
STATE_LATENCY_KEY = "bench:state_latency_ms"


@app.task(name="bench_stamp")
def bench_stamp(sent_at_ms: float) -> None:
    _client.rpush(LATENCY_KEY, time.time() * 1000 - sent_at_ms)


@app.task(name="bench_state_stamp")
def bench_state_stamp(sent_at_ms: float) -> None:
    _client.rpush(STATE_LATENCY_KEY, time.time() * 1000 - sent_at_ms)


@app.task(name="bench_noop")
def bench_noop(payload: str) -> None:
    pass


@app.task(name="bench_bulk")
def bench_bulk(payload: str) -> None:
    time.sleep(0.01)
