"""The broker when Redis fails mid-operation, clocks disagree, or input is hostile."""

from __future__ import annotations

import json
import threading
import time

import dramatiq
import pytest
import redis
from dramatiq import Worker
from dramatiq.errors import ConnectionClosed

from actors import keys
from actors.broker import RedisBroker
from actors.middleware import FixedRetries, TimeLimits
from tests.actors.test_broker import declare, drain
from tests.support.waiting import wait_for


def test_a_retry_is_scheduled_in_the_same_step_as_the_ack_and_survives_a_failed_ack(make_broker, redis_client,
                                                                                      monkeypatch):
    broker = make_broker()
    declare(broker).send("x")
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (message,) = drain(consumer, 1)
    message.retry_on_ack(message.copy(options={"retries": 1}), 5_000)

    # When Redis fails during the ack
    real = broker.schedule
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise redis.ConnectionError("Redis went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(broker, "schedule", flaky)
    with pytest.raises(ConnectionClosed):
        consumer.ack(message)

    # Then the attempt is still in flight, nothing is lost, and the ack tried again works
    assert redis_client.llen(message.inflight_key) == 1
    assert redis_client.zcard(keys.delayed_key("default")) == 0
    consumer.ack(message)
    assert redis_client.llen(message.inflight_key) == 0
    ((element, _),) = redis_client.zrange(keys.delayed_key("default"), 0, -1, withscores=True)
    assert json.loads(element)["options"]["retries"] == 1
    assert broker.inflight.busy_count(message.inflight_key) == 0


@pytest.mark.parametrize("error", [redis.TimeoutError("timed out"), redis.ReadOnlyError("READONLY replica")])
def test_any_redis_error_in_an_ack_is_a_connection_error_dramatiq_retries(make_broker, redis_client, monkeypatch,
                                                                           error):
    broker = make_broker()
    declare(broker).send("x")
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (message,) = drain(consumer, 1)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(consumer.client, "lrem", fail)
    with pytest.raises(ConnectionClosed):
        consumer.ack(message)
    assert broker.inflight.busy_count(message.inflight_key) == 1
    monkeypatch.undo()
    consumer.ack(message)
    assert broker.inflight.busy_count(message.inflight_key) == 0


def test_a_consumer_that_cannot_register_leaves_nothing_behind(make_broker, monkeypatch):
    broker = make_broker()
    declare(broker)

    def down():
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(broker, "heartbeat", down)
    for _ in range(3):
        with pytest.raises(ConnectionClosed):
            broker.consume("default", prefetch=1, timeout=100)
    assert len(broker.inflight) == 0


def test_heartbeats_use_redis_clock_not_the_hosts(make_broker, redis_client, monkeypatch):
    # Given a worker host whose clock is an hour behind
    broker = make_broker(heartbeat_timeout_ms=600)
    declare(broker)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)
    broker.consume("default", prefetch=1, timeout=100)

    # Then its heartbeat is scored by Redis's clock, and a sweep keeps it alive
    seconds, micros = redis_client.time()
    score = redis_client.zscore(keys.HEARTBEATS, broker.broker_id)
    assert abs(score - (seconds * 1000 + micros // 1000)) < 2_000
    assert broker.sweep() == (0, 0)


@pytest.mark.parametrize(
    "element",
    [
        b'{"body": "W1tdLCB7fSwge31d", "headers": {"task": "tasks.x", "id": "1", "retries": "abc"}}',
        b'{"body": "W1tdLCB7fSwge31d", "headers": {"task": "tasks.x", "id": "1"}, "properties": "oops"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"priority":-5,"actor_name":"noop","args":"not a list"}',
    ],
    ids=["bad-retries", "bad-properties", "deep-nesting", "bad-args"],
)
def test_a_poison_element_is_dead_lettered_and_the_consumer_goes_on(make_broker, redis_client, element):
    broker = make_broker()
    actor = declare(broker)
    redis_client.lpush("celery", element)
    actor.send("after")
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (message,) = drain(consumer, 1)
    assert message.args == ("after",)
    (record,) = broker.dead_letters("default")
    assert record["error"].startswith("UndecodableMessage(")


def test_time_limits_firing_as_tasks_end_never_wedge_or_kill_worker_threads(redis_client):
    # Given many tasks that end right around their soft limit
    limits = TimeLimits(time_limit_ms=150, soft_time_limit_ms=20)
    broker = RedisBroker(client=redis.Redis(connection_pool=redis_client.connection_pool),
                         middleware=[FixedRetries(retry_delays_ms=(60_000,)), limits])
    done = []

    def busy(i):
        end = time.monotonic() + 0.02
        while time.monotonic() < end:
            pass
        done.append(i)

    actor = dramatiq.actor(busy, actor_name="busy", broker=broker)
    for i in range(400):
        actor.send(i)
    worker = Worker(broker, worker_threads=8, worker_timeout=100)
    died = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: died.append(args.exc_type)
    worker.start()
    try:
        # Then every message is finished or retried, and every thread lives
        wait_for(lambda: broker.queue_sizes("default")["waiting"] == 0
                 and broker.queue_sizes("default")["inflight"] == 0, timeout_s=60)
        assert died == []
        assert all(t.is_alive() for t in worker.workers)
        assert limits._monitor.is_alive()
        sizes = broker.queue_sizes("default")
        assert len(set(done)) + sizes["delayed"] >= 400
    finally:
        threading.excepthook = previous_hook
        worker.stop()
        broker.close()


@pytest.mark.parametrize("exception", [ConnectionError("upstream down"), ValueError("bug")])
def test_fail_held_does_nothing_when_the_element_leaves_flight_before_it_acts(make_broker, redis_client, monkeypatch,
                                                                              exception):
    from actors.abandoned import fail_held

    broker = make_broker()
    declare(broker).send("x")
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (message,) = drain(consumer, 1)
    retries = next(m for m in broker.middleware if isinstance(m, FixedRetries))
    real_decide = retries.decide

    def decide_while_acked(*args, **kwargs):
        # The blocked thread's own ack (or a sweep, a release) lands while fail_held decides
        redis_client.lrem(message.inflight_key, -1, message.raw)
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(retries, "decide", decide_while_acked)

    # When fail_held acts on the element after it left the in-flight list
    outcome = fail_held(broker, inflight_key=message.inflight_key, raw=message.raw, message=message._message,
                        exception=exception)

    # Then it neither schedules nor dead-letters a second copy
    assert outcome == "gone"
    assert redis_client.zcard(keys.delayed_key("default")) == 0
    assert redis_client.zcard(keys.dead_key("default")) == 0


@pytest.mark.parametrize("exception, outcome", [(ConnectionError("upstream down"), "retried"),
                                                (ValueError("bug"), "failed")])
def test_fail_held_takes_a_held_element_out_of_flight_in_the_same_step(make_broker, redis_client, exception,
                                                                       outcome):
    from actors.abandoned import fail_held

    broker = make_broker()
    declare(broker).send("x")
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (message,) = drain(consumer, 1)

    assert fail_held(broker, inflight_key=message.inflight_key, raw=message.raw, message=message._message,
                     exception=exception) == outcome
    assert redis_client.llen(message.inflight_key) == 0
    copies = redis_client.zcard(keys.delayed_key("default")) + redis_client.zcard(keys.dead_key("default"))
    assert copies == 1
