"""The worker module of the benchmarks: the project's broker and one no-op actor."""

import time

import redis

import actors
from facade.api import task

_client = redis.Redis.from_url(actors.config.redis_uri)


@task(queue="default", priority=5, name="bench_stamp", time_limit=300, soft_time_limit=240, retry_delays=(5, 10, 20))
def bench_stamp(sent_at_ms: float) -> None:
    """Record how long after its send this task started, in milliseconds."""
    _client.rpush("bench:latency_ms", time.time() * 1000 - sent_at_ms)


@task(queue="default", priority=5, name="bench_noop", time_limit=300, soft_time_limit=240, retry_delays=(5, 10, 20))
def bench_noop(payload: str) -> None:
    """Does nothing: the drain benchmark measures the queue, not the work."""
