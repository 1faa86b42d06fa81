"""The worker module of the benchmarks for this project: its broker and no-op actors.

``dramatiq bench.noop_app`` and ``celery -A bench.noop_app worker`` run
these with the project's broker and middleware, as the real actors do.
The peers' twins are ``bench.stock_dramatiq_app`` and ``bench.celery_app``;
all three record latencies the same way (see ``bench.clients``).
"""

from __future__ import annotations

import time
from typing import Any

import redis

import actors
from facade.api import task

_client = redis.Redis.from_url(actors.config.redis_uri)

#: The Redis lists the stamping tasks push their send-to-start latency (ms) to.
LATENCY_KEY = "bench:latency_ms"
STATE_LATENCY_KEY = "bench:state_latency_ms"

#: loads_domain=False: these tasks never touch the database, the graph or WhatsApp, so the worker
#: does not import them (actors.middleware.DomainLoader), as a node whose tasks never need them.
_LIMITS: dict[str, Any] = {"time_limit": 300, "soft_time_limit": 240, "retry_delays": (5, 10, 20),
                           "options": {"loads_domain": False}}


@task(queue="default", priority=5, name="bench_stamp", **_LIMITS)
def bench_stamp(sent_at_ms: float) -> None:
    """Record how long after its send this task started, in milliseconds."""
    _client.rpush(LATENCY_KEY, time.time() * 1000 - sent_at_ms)


@task(queue="state", priority=8, name="bench_state_stamp", **_LIMITS)
def bench_state_stamp(sent_at_ms: float) -> None:
    """A state-queue task (the runbook's priority 8) that records its send-to-start latency."""
    _client.rpush(STATE_LATENCY_KEY, time.time() * 1000 - sent_at_ms)


@task(queue="default", priority=5, name="bench_noop", **_LIMITS)
def bench_noop(payload: str) -> None:
    """Does nothing: the drain benchmark measures the queue, not the work."""


@task(queue="default", priority=5, name="bench_bulk", **_LIMITS)
def bench_bulk(payload: str) -> None:
    """10 ms of sleep: the backlog a state task must not wait behind."""
    time.sleep(0.01)
