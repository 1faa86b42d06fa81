"""The five actors' contract: names, queues, priorities, limits, retries, dead letters."""

from __future__ import annotations

import dataclasses
import time

import pytest
from sqlalchemy import select

import tasks
from actors import keys
from actors import runtime as runtime_module
from app.buffer import append_to_buffer
from app.db import Conversation, Message, make_engine, make_session_factory
from facade.api import Task
from tests.support import extra_actors as test_actors
from tests.support.buffers import backdate
from tests.support.waiting import wait_for

CONTRACT = {
    "update_langgraph_state_task": ("state", 8),
    "sync_operator_message_to_graph_task": ("state", 7),
    "process_message_task": ("default", 5),
    "check_buffer_task": ("default", 3),
    "update_message_status_task": ("default", 1),
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_each_task_keeps_the_runbook_contract(name):
    actor = tasks.TASKS[name]
    queue, priority = CONTRACT[name]
    assert isinstance(actor, Task)
    assert actor.name == name
    assert actor.queue_name == queue
    # Dramatiq's scale inside: lower is more urgent.
    assert actor.priority == -priority
    assert actor.options["time_limit"] == 300_000
    assert actor.options["soft_time_limit"] == 240_000
    assert actor.options["retry_delays"] == (5_000, 10_000, 20_000)
    assert actor.options["max_retries"] == 3


def test_delay_of_each_task_shows_in_llen(global_broker, redis_client):
    tasks.update_langgraph_state_task.delay("c1", "takeover")
    tasks.sync_operator_message_to_graph_task.delay("c1", "hello", "op-1")
    tasks.process_message_task.delay("c1", "b1", [{"wamid": "w1", "text": "hi"}])
    tasks.check_buffer_task.delay("c1", 1)
    tasks.update_message_status_task.delay({"id": "w1", "status": "sent", "timestamp": "1"})

    assert redis_client.llen("celery") == 3
    assert redis_client.llen("state") == 2


def test_a_state_task_runs_before_default_tasks_the_worker_already_holds(global_broker, redis_client, runtime,
                                                                          start_worker):
    # Given a one-thread worker busy with a task, holding a default task in memory
    start_worker(global_broker, worker_threads=1)
    test_actors.test_gate.send("test:open")
    wait_for(lambda: redis_client.lrange("test:order", 0, -1) == [b"gate"])
    for i in range(4):
        test_actors.test_record_default.send(f"default-{i}")
    wait_for(lambda: redis_client.llen("celery") == 3)  # one default task prefetched

    # When a state task arrives and the busy task ends
    test_actors.test_record_state.send("state")
    wait_for(lambda: redis_client.llen("state") == 0)
    redis_client.set("test:open", 1)

    # Then the state task runs next, before the prefetched default one
    wait_for(lambda: redis_client.llen("test:order") == 6)
    order = redis_client.lrange("test:order", 0, -1)
    assert order[:2] == [b"gate", b"state"]
    assert sorted(order[2:]) == [f"default-{i}".encode() for i in range(4)]


def test_a_transient_failure_is_retried_at_5_10_and_20_seconds_then_dead_lettered(global_broker, redis_client,
                                                                                   runtime, start_worker):
    # Given the database is unreachable (connection refused)
    down = make_session_factory(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none"))
    runtime_module.install(dataclasses.replace(runtime, sessions=down))
    start_worker(global_broker)
    sent = tasks.update_message_status_task.delay({"id": "wamid.X", "status": "read", "timestamp": "5"})
    delayed = keys.delayed_key("default")

    # When each attempt fails, the retry waits exactly the runbook's delay
    for attempt, expected_s in enumerate((5, 10, 20), start=1):
        ((element, eta),) = wait_for(lambda: redis_client.zrange(delayed, 0, -1, withscores=True))
        wait = eta / 1000 - time.time()
        assert expected_s - 1.0 < wait <= expected_s, (attempt, wait)
        assert f'"retries":{attempt}'.encode() in element
        # Shorten the clock: make the retry due now, and wake the scheduler.
        redis_client.zadd(delayed, {element: 0})
        redis_client.lpush(keys.wake_key(), 1)
        wait_for(lambda element=element: redis_client.zscore(delayed, element) is None)

    # Then the fourth failure goes to the dead-letter set with its error
    (record,) = wait_for(lambda: global_broker.dead_letters("default"))
    assert record["message_id"] == sent.id
    assert "OperationalError" in record["error"]
    assert "Traceback" in record["traceback"]
    assert redis_client.zcard(delayed) == 0


def test_retries_follow_injected_delays_for_four_executions_in_all(global_broker, redis_client, runtime,
                                                                    start_worker):
    start_worker(global_broker)
    test_actors.test_flaky.send_with_options(args=("x",), retry_delays=(50, 100, 200))
    (record,) = wait_for(lambda: global_broker.dead_letters("default"))
    assert redis_client.llen("test:runs") == 4
    assert record["error"] == "ConnectionError('upstream down')"


def test_invalid_arguments_are_dead_lettered_at_once(global_broker, redis_client, runtime, start_worker):
    start_worker(global_broker)
    sent = tasks.process_message_task.delay("c1", "b1", "not a list")
    (record,) = wait_for(lambda: global_broker.dead_letters("default"))
    assert record["message_id"] == sent.id
    assert "messages must be a non-empty list of objects" in record["error"]
    assert redis_client.zcard(keys.delayed_key("default")) == 0


def test_an_expired_message_is_dead_lettered_without_running(global_broker, redis_client, runtime, start_worker,
                                                             db):
    sent = tasks.update_langgraph_state_task.apply_async(args=["c-exp", "takeover"], expires=0.05)
    time.sleep(0.1)
    start_worker(global_broker)
    (record,) = wait_for(lambda: global_broker.dead_letters("state"))
    assert record["message_id"] == sent.id
    assert "age limit" in record["error"]
    with db() as session:
        assert session.scalars(select(Conversation)).all() == []


def test_a_message_for_an_unknown_task_is_dead_lettered(global_broker, redis_client, runtime, start_worker):
    message = tasks.check_buffer_task.message("c", 1).copy(actor_name="no_such_task")
    global_broker.enqueue(message)
    start_worker(global_broker)
    (record,) = wait_for(lambda: global_broker.dead_letters("default"))
    assert "no_such_task" in record["error"]


def test_the_soft_limit_raises_inside_the_task(global_broker, redis_client, runtime, start_worker, caplog):
    caplog.set_level("WARNING", logger="celery.worker.request")
    start_worker(global_broker)
    test_actors.test_soft_limit.apply_async(soft_time_limit=0.2, time_limit=5)
    wait_for(lambda: redis_client.lrange("test:order", 0, -1) == [b"soft limit caught"])
    assert any("Soft time limit (0.2s) exceeded for tasks.test_soft_limit[" in r.getMessage() for r in caplog.records)


def test_the_hard_limit_stops_a_task_that_ignores_the_soft_one_and_retries_it(global_broker, redis_client, runtime,
                                                                            start_worker, caplog):
    caplog.set_level("WARNING", logger="celery.worker.request")
    start_worker(global_broker)
    sent = test_actors.test_hard_limit.apply_async(soft_time_limit=0.1, time_limit=0.3)
    ((element, _eta),) = wait_for(lambda: redis_client.zrange(keys.delayed_key("default"), 0, -1, withscores=True))
    assert sent.id.encode() in element and b'"retries":1' in element
    assert b"ignored the soft limit" in redis_client.lrange("test:order", 0, -1)
    assert any("Hard time limit (0.3s) exceeded for tasks.test_hard_limit[" in r.getMessage() for r in caplog.records)


def test_a_buffered_conversation_gets_one_reply_even_if_its_check_runs_twice(global_broker, redis_client, runtime,
                                                                              start_worker, db):
    # Given two messages buffered for one conversation
    seq1 = append_to_buffer(redis_client, "15550000001", "w1", {"wamid": "w1", "text": "hello"})
    seq2 = append_to_buffer(redis_client, "15550000001", "w2", {"wamid": "w2", "text": "are you there?"})
    assert append_to_buffer(redis_client, "15550000001", "w1", {"wamid": "w1", "text": "hello"}) == 0
    start_worker(global_broker)

    # When the stale check, the latest check and a redelivered latest check run
    tasks.check_buffer_task.delay("15550000001", seq1)
    tasks.check_buffer_task.delay("15550000001", seq2)
    tasks.check_buffer_task.delay("15550000001", seq2)
    global_broker.join("default", timeout=10_000)

    # Then both messages are stored and answered once
    with db() as session:
        rows = session.scalars(select(Message).order_by(Message.id)).all()
    assert [(m.author, m.text) for m in rows if m.author == "customer"] == [
        ("customer", "hello"),
        ("customer", "are you there?"),
    ]
    replies = [m for m in rows if m.author == "ai"]
    assert len(replies) == 1
    assert "are you there?" in replies[0].text


def test_a_check_judges_the_maximum_wait_by_redis_clock_not_the_workers(global_broker, redis_client, runtime,
                                                                         monkeypatch):
    key, real_time = "15550000002", time.time
    max_wait_ms = int(runtime.config.buffer_max_wait_s * 1000)
    # Given a customer still typing: two messages, the first 1 s ago by Redis's clock
    for n in (1, 2):
        append_to_buffer(redis_client, key, f"w{n}", {"wamid": f"w{n}", "text": "hi"})
    backdate(redis_client, key, first_ago_ms=1_000, last_ago_ms=0)

    # When the first message's check runs on a worker whose clock is an hour ahead
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    # Then it gives way to the second message's check: nothing is handed over early
    assert tasks.check_buffer_task(key, 1) is None
    assert redis_client.llen("app:buffer:" + key) == 2 and redis_client.llen("celery") == 0

    # And when the first message has waited the maximum by Redis's clock, a
    # worker whose clock is an hour behind hands the buffer over, not late
    backdate(redis_client, key, first_ago_ms=max_wait_ms + 1_000, last_ago_ms=0)
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)
    assert tasks.check_buffer_task(key, 1) is not None
    assert redis_client.llen("app:buffer:" + key) == 0 and redis_client.llen("celery") == 1


def test_takeover_silences_the_ai_and_handback_resumes_it(global_broker, runtime, start_worker, db):
    start_worker(global_broker)
    tasks.update_langgraph_state_task.delay("15550000009", "takeover", "op-7")
    global_broker.join("state", timeout=10_000)
    tasks.process_message_task.delay("15550000009", "b1", [{"wamid": "w9", "text": "hi"}])
    tasks.sync_operator_message_to_graph_task.delay("15550000009", "An operator here", "op-msg-1", "op-7")
    global_broker.join("default", timeout=10_000)
    global_broker.join("state", timeout=10_000)
    tasks.update_langgraph_state_task.delay("15550000009", "handback")
    global_broker.join("state", timeout=10_000)
    tasks.process_message_task.delay("15550000009", "b2", [{"wamid": "w10", "text": "thanks"}])
    global_broker.join("default", timeout=10_000)

    with db() as session:
        authors = [(m.author, m.batch_id) for m in session.scalars(select(Message).order_by(Message.id))]
    assert ("ai", "b1") not in authors
    assert ("ai", "b2") in authors
    assert ("operator", None) in authors


def test_statuses_delivered_out_of_order_end_as_read(global_broker, runtime, start_worker, db):
    with db() as session, session.begin():
        from app.conversation import get_or_create_conversation

        conversation = get_or_create_conversation(session, "c5")
        session.add(Message(conversation=conversation, author="ai", wamid="wamid.S", text="hi", status="sending"))
    start_worker(global_broker, worker_threads=1)
    for status in ("read", "delivered", "sent"):
        tasks.update_message_status_task.delay({"id": "wamid.S", "status": status, "timestamp": "9"})
    global_broker.join("default", timeout=10_000)
    with db() as session:
        assert session.scalars(select(Message.status).where(Message.wamid == "wamid.S")).one() == "read"


def test_a_redis_error_raised_by_the_broker_in_a_task_is_retried_not_dead_lettered(global_broker, redis_client,
                                                                                     runtime, start_worker):
    # Given a task whose follow-up send meets an unreachable Redis (ConnectionClosed)
    start_worker(global_broker)
    test_actors.test_enqueue_during_a_redis_blip.send("blip")

    # Then the task is scheduled for its first retry, and nothing is dead-lettered
    ((element, _eta),) = wait_for(lambda: redis_client.zrange(keys.delayed_key("default"), 0, -1, withscores=True))
    assert b'"retries":1' in element
    assert global_broker.dead_letters("default") == []


def test_the_brokers_and_redis_connection_errors_are_transient():
    import dramatiq.errors
    import redis

    from actors.middleware.retries import is_transient

    assert is_transient(dramatiq.errors.ConnectionClosed(redis.ConnectionError("refused")))
    assert is_transient(dramatiq.errors.ConnectionFailed("refused"))
    assert is_transient(redis.exceptions.ConnectionError("refused"))
    assert is_transient(redis.exceptions.TimeoutError("timed out"))
