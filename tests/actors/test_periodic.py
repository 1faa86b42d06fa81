"""The periodic jobs: the buffer sweep re-sends lost checks, the queue check warns."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import select

import tasks
from actors import periodic
from app.buffer import append_to_buffer
from app.db import Conversation, Message
from tests.support.buffers import backdate


def test_the_sweep_resends_a_lost_check_and_the_conversation_gets_its_batch(global_broker, redis_client, runtime,
                                                                            start_worker, db):
    # Given a buffer appended a minute ago whose check never got enqueued
    append_to_buffer(redis_client, "15557770000", "wamid.lost1", {"wamid": "wamid.lost1", "text": "anyone?"})
    append_to_buffer(redis_client, "15557770000", "wamid.lost2", {"wamid": "wamid.lost2", "text": "hello?"})
    backdate(redis_client, "15557770000", first_ago_ms=60_000, last_ago_ms=59_000)

    # When the sweep runs twice (two periods, or two beats) before a worker does
    assert periodic.sweep_buffers(redis_client, runtime.config, send_check=tasks.check_buffer_task.send) == 1
    assert periodic.sweep_buffers(redis_client, runtime.config, send_check=tasks.check_buffer_task.send) == 0
    assert redis_client.llen("celery") == 1
    start_worker(global_broker)
    global_broker.join("default", timeout=20_000)

    # Then the conversation gets its batch answered once, in order
    with db() as session:
        conversation = session.scalars(select(Conversation).where(Conversation.customer_key == "15557770000")).one()
        rows = session.scalars(select(Message).where(Message.conversation_id == conversation.id)
                               .order_by(Message.id)).all()
    assert [(m.author, m.wamid) for m in rows[:2]] == [("customer", "wamid.lost1"), ("customer", "wamid.lost2")]
    assert [m.author for m in rows[2:]] == ["ai"]
    assert global_broker.dead_letters("default") == []


def test_the_sweep_leaves_a_conversation_inside_its_window_alone(global_broker, redis_client, runtime):
    append_to_buffer(redis_client, "c-fresh", "wamid.f1", {"wamid": "wamid.f1", "text": "hi"})
    backdate(redis_client, "c-fresh", first_ago_ms=2_000)

    assert periodic.sweep_buffers(redis_client, runtime.config, send_check=tasks.check_buffer_task.send) == 0
    assert redis_client.llen("celery") == 0


def test_a_failed_send_is_tried_again_at_the_next_sweep(global_broker, redis_client, runtime):
    append_to_buffer(redis_client, "c-retry", "wamid.r1", {"wamid": "wamid.r1", "text": "hi"})
    backdate(redis_client, "c-retry", first_ago_ms=60_000)

    def broken_send(conversation, seq):
        raise ConnectionError("Redis went away")

    with pytest.raises(ConnectionError):
        periodic.sweep_buffers(redis_client, runtime.config, send_check=broken_send)
    assert periodic.sweep_buffers(redis_client, runtime.config, send_check=tasks.check_buffer_task.send) == 1


def test_the_queue_check_warns_above_the_threshold_naming_queue_and_depth(global_broker, redis_client, caplog):
    for i in range(3):
        tasks.check_buffer_task.delay(f"c{i}", 1)
    tasks.update_langgraph_state_task.delay("c1", "takeover")
    caplog.set_level(logging.WARNING, logger="actors.periodic")

    warnings = periodic.check_queues(global_broker, threshold=2)

    assert warnings == ["Queue 'default' (list 'celery') has 3 waiting messages, above the alert threshold of 2."]
    assert [r.getMessage() for r in caplog.records] == warnings
    assert periodic.check_queues(global_broker, threshold=3) == []


def test_the_queue_check_warns_when_dead_letters_grow(global_broker, redis_client):
    from actors import keys

    assert periodic.check_queues(global_broker, threshold=1000) == []
    redis_client.zadd(keys.dead_key("state"), {"m1": 1, "m2": 2})

    assert periodic.check_queues(global_broker, threshold=1000) == ["Dead letters of queue 'state' grew from 0 to 2."]
    assert periodic.check_queues(global_broker, threshold=1000) == []


def test_the_config_reads_the_alert_threshold_and_intervals():
    from app.config import Config

    cfg = Config.from_env({"QUEUE_ALERT_THRESHOLD": "50", "BUFFER_SWEEP_INTERVAL_SECONDS": "5",
                           "QUEUE_CHECK_INTERVAL_SECONDS": "30", "BEAT_LEASE_SECONDS": "9"})
    assert (cfg.queue_alert_threshold, cfg.buffer_sweep_interval_s, cfg.queue_check_interval_s,
            cfg.beat_lease_s) == (50, 5.0, 30.0, 9.0)
    assert Config.from_env({}).queue_alert_threshold == 1000


def test_the_sweep_goes_by_redis_clock_not_the_beat_hosts(global_broker, redis_client, runtime, monkeypatch):
    # Given a buffer whose last message came just now (by Redis's clock, as every append)
    append_to_buffer(redis_client, "c-typing", "wamid.t1", {"wamid": "wamid.t1", "text": "hi"})

    # When the beat host's clock is an hour ahead
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)

    # Then the customer still typing is left alone
    assert periodic.sweep_buffers(redis_client, runtime.config, send_check=tasks.check_buffer_task.send) == 0
    assert redis_client.llen("celery") == 0


def test_beyond_the_cap_each_sweep_reaches_other_lost_buffers(global_broker, redis_client, runtime):
    # Given more lost buffers than one sweep sends
    for i in range(5):
        append_to_buffer(redis_client, f"c-many-{i}", f"wamid.m{i}", {"wamid": f"wamid.m{i}", "text": "hi"})
        backdate(redis_client, f"c-many-{i}", first_ago_ms=60_000)
    sent: list[str] = []

    def send(conversation, seq):
        sent.append(conversation)

    # When sweeps of at most 2 sends run one after another
    counts = [periodic.sweep_buffers(redis_client, runtime.config, send_check=send, max_sends=2) for _ in range(4)]

    # Then every lost buffer is reached once, none found again while its resend is recent
    assert counts == [2, 2, 1, 0]
    assert sorted(sent) == [f"c-many-{i}" for i in range(5)]


def test_the_beat_jobs_are_the_buffer_sweep_and_the_queue_check_at_the_configured_intervals(global_broker,
                                                                                            runtime):
    jobs = periodic.jobs(runtime.config, global_broker)

    assert [(j.name, j.task, j.interval_s) for j in jobs] == [
        ("buffer-sweep", "tasks.check_buffer_task", runtime.config.buffer_sweep_interval_s),
        ("queue-check", "actors.periodic.check_queues", runtime.config.queue_check_interval_s),
    ]
