"""The conversation tasks on a real worker: lock, takeover, handback, statuses."""

from __future__ import annotations

import json
import logging

from sqlalchemy import select

import tasks
from actors import keys
from app.db import Message
from app.db.models import OutboxEntry
from app.lock import conversation_lock
from tests.support.conversations import inbound
from tests.support.waiting import wait_for

KEY = "15550001111"


def test_two_batches_of_one_conversation_never_run_the_graph_at_once(global_broker, redis_client, runtime,
                                                                      start_worker, whatsapp, model, db, caplog):
    caplog.set_level(logging.INFO, logger="actors.busy")
    model.delay_s = 0.3
    start_worker(global_broker, worker_threads=4)
    # Given the conversation's lock is held, and two batches arrive
    with conversation_lock(redis_client, KEY, ttl_s=60):
        tasks.process_message_task.delay(KEY, "b1", [inbound("w1", "first question")])
        tasks.process_message_task.delay(KEY, "b2", [inbound("w2", "second question")])
        # When they find it busy, they are sent again for later, not retried
        delayed = wait_for(lambda: redis_client.zrange(keys.delayed_key("default"), 0, -1))
        assert all(b'"retries"' not in element for element in delayed)
    # Then, the lock released, both are answered, one model call after the other
    wait_for(lambda: len(whatsapp.sent) == 2, timeout_s=60)
    global_broker.join("default", timeout=60_000)
    spans = sorted(model.spans)
    assert len(spans) == 2
    assert spans[0][1] <= spans[1][0], f"model calls overlapped: {spans}"
    assert sorted(s.callback_data for s in whatsapp.sent) == ["b1", "b2"]
    assert any("Conversation busy" in r.getMessage() for r in caplog.records)
    assert global_broker.dead_letters("default") == []


def test_takeover_operator_message_and_handback_through_the_tasks(global_broker, runtime, start_worker, whatsapp,
                                                                   model, db):
    start_worker(global_broker)
    # Given an operator took the conversation over and the customer wrote
    tasks.update_langgraph_state_task.delay(KEY, "takeover", "op-7")
    global_broker.join("state", timeout=20_000)
    tasks.process_message_task.delay(KEY, "b1", [inbound("w1", "is anyone there?")])
    global_broker.join("default", timeout=20_000)
    tasks.sync_operator_message_to_graph_task.delay(KEY, "Yes, Rita here.", "op-msg-1", "op-7", True)
    global_broker.join("state", timeout=20_000)
    tasks.process_message_task.delay(KEY, "b2", [inbound("w2", "great, where is my order?")])
    global_broker.join("default", timeout=20_000)
    assert [s.callback_data for s in whatsapp.sent] == ["operator:op-msg-1"]
    assert whatsapp.read == []

    # When the operator hands back
    tasks.update_langgraph_state_task.delay(KEY, "handback", "op-7")

    # Then the waiting message gets one answer, written with the operator's turn in view
    wait_for(lambda: len(whatsapp.sent) == 2)
    global_broker.join("default", timeout=20_000)
    assert whatsapp.sent[1].callback_data == "handback:w2"
    assert whatsapp.read == [("w2", True)]
    turns = [(t.role, t.text) for t in model.calls[-1]]
    assert ("model", "[human operator] Yes, Rita here.") in turns
    assert turns[-1] == ("user", "great, where is my order?")
    with db() as session:
        assert session.scalars(select(OutboxEntry.state).order_by(OutboxEntry.id)).all() == ["sent", "sent"]


def test_a_reaction_and_a_system_message_are_stored_and_not_answered(global_broker, runtime, start_worker,
                                                                      whatsapp, db):
    start_worker(global_broker)
    tasks.process_message_task.delay(KEY, "b1", [
        inbound("w-r", "[reaction ❤️]", kind="reaction", reaction_to="wamid.x", emoji="❤️"),
        inbound("w-s", "User changed number", kind="system", new_wa_id="15550002222"),
    ])
    global_broker.join("default", timeout=20_000)
    assert whatsapp.sent == []
    with db() as session:
        assert session.scalars(select(Message.kind).order_by(Message.id)).all() == ["reaction", "system"]


def test_old_queue_messages_without_the_new_keys_are_still_answered(global_broker, runtime, start_worker,
                                                                    whatsapp, db):
    start_worker(global_broker)
    tasks.process_message_task.delay(KEY, "b1", [{"wamid": "w-old", "text": "hi", "wa_id": KEY}])
    global_broker.join("default", timeout=20_000)
    assert [s.to for s in whatsapp.sent] == [KEY]


def test_a_malformed_message_is_dead_lettered_with_a_clear_error(global_broker, runtime, start_worker):
    start_worker(global_broker)
    tasks.process_message_task.delay(KEY, "b1", [{"wamid": "w1", "text": "hi", "answerable": "yes"}])
    (record,) = wait_for(lambda: global_broker.dead_letters("default"))
    assert "message.answerable must be true or false" in record["error"]


def test_statuses_read_then_delivered_end_as_read_and_an_early_status_waits_for_its_reply(
        global_broker, runtime, start_worker, whatsapp, db):
    start_worker(global_broker, worker_threads=1)
    # Given Meta's "delivered" for the reply arrives before the reply is stored
    tasks.update_message_status_task.delay({"id": "wamid.out.1", "status": "delivered", "timestamp": "5"})
    global_broker.join("default", timeout=20_000)
    # When the reply is sent and stored, then read and delivered arrive in that order
    tasks.process_message_task.delay(KEY, "b1", [inbound("w1", "hello")])
    global_broker.join("default", timeout=20_000)
    with db() as session:
        assert session.scalars(select(Message.status).where(Message.wamid == "wamid.out.1")).one() == "delivered"
    for status in ("read", "delivered"):
        tasks.update_message_status_task.delay({"id": "wamid.out.1", "status": status, "timestamp": "9"})
    global_broker.join("default", timeout=20_000)
    # Then it ends as read
    with db() as session:
        assert session.scalars(select(Message.status).where(Message.wamid == "wamid.out.1")).one() == "read"


def test_a_failed_status_keeps_metas_code_and_title(global_broker, runtime, start_worker, whatsapp, db):
    start_worker(global_broker, worker_threads=1)
    tasks.process_message_task.delay(KEY, "b1", [inbound("w1", "hello")])
    global_broker.join("default", timeout=20_000)
    failed = {"id": "wamid.out.1", "status": "failed", "timestamp": "9",
              "errors": [{"code": 131047, "title": "Re-engagement message"}]}
    tasks.update_message_status_task.delay(json.loads(json.dumps(failed)))
    global_broker.join("default", timeout=20_000)
    with db() as session:
        row = session.scalars(select(Message).where(Message.wamid == "wamid.out.1")).one()
        assert (row.status, row.error_code, row.error_title) == ("failed", 131047, "Re-engagement message")


def test_a_takeover_that_finds_the_conversation_busy_is_applied_once_it_is_free(global_broker, redis_client,
                                                                                 runtime, start_worker, db):
    from app.db import Conversation

    start_worker(global_broker)
    with conversation_lock(redis_client, KEY, ttl_s=60):
        tasks.update_langgraph_state_task.delay(KEY, "takeover", "op-7")
        # The database flag is set at once; the graph waits for the lock
        wait_for(lambda: redis_client.zcard(keys.delayed_key("state")) == 1)
        with db() as session:
            assert session.scalars(select(Conversation.operator_active)
                                   .where(Conversation.customer_key == KEY)).one() is True
    graph = runtime_services(runtime).graph
    wait_for(lambda: graph.operator_active(KEY))
    global_broker.join("state", timeout=20_000)
    assert global_broker.dead_letters("state") == []


def runtime_services(rt):
    from actors import runtime as runtime_module

    return runtime_module.services(rt)


def test_a_takeover_resent_while_busy_never_undoes_the_handback_that_followed_it(global_broker, redis_client,
                                                                                  runtime, db):
    from dramatiq import Worker

    from app.db import Conversation
    from app.operator import set_operator_hold

    services = runtime_services(runtime)
    # Given a takeover that found the conversation busy and was sent again for later
    first = Worker(global_broker, worker_timeout=100, worker_threads=1)
    first.start()
    try:
        with conversation_lock(redis_client, KEY, ttl_s=60):
            tasks.update_langgraph_state_task.delay(KEY, "takeover", "op-7")
            wait_for(lambda: redis_client.zcard(keys.delayed_key("state")) == 1)
    finally:
        first.stop()

    # When the operator hands back before the re-sent takeover runs
    assert set_operator_hold(services, KEY, "handback", "op-7") is None
    second = Worker(global_broker, worker_timeout=100, worker_threads=1)
    second.start()
    try:
        wait_for(lambda: redis_client.zcard(keys.delayed_key("state")) == 0)
        global_broker.join("state", timeout=20_000)
    finally:
        second.stop()

    # Then the last action wins: the conversation is free, in the database and the graph
    with db() as session:
        held = session.scalars(select(Conversation.operator_active).where(Conversation.customer_key == KEY)).one()
    assert held is False
    assert services.graph.operator_active(KEY) is False
    assert global_broker.dead_letters("state") == []


def test_a_takeover_retried_after_its_commit_never_undoes_the_handback_that_followed_it(
        global_broker, runtime, start_worker, db, monkeypatch):
    from app.db import Conversation, session_scope
    from app.errors import TransientError
    from app.graph import ConversationGraph
    from app.operator import set_hold_flag

    services = runtime_services(runtime)
    real_write = ConversationGraph.write_as_operator
    failures = []

    def write_then_fail_once(self, thread_id, values):
        if not failures:
            # The takeover's flag is committed; a handback lands in the database
            # meanwhile, and the checkpointer fails: the takeover is retried.
            with session_scope(services.sessions) as session:
                set_hold_flag(session, KEY, "handback", "op-7")
            failures.append(thread_id)
            raise TransientError("checkpoints unavailable")
        real_write(self, thread_id, values)

    monkeypatch.setattr(ConversationGraph, "write_as_operator", write_then_fail_once)
    start_worker(global_broker)

    tasks.update_langgraph_state_task.send_with_options(args=(KEY, "takeover", "op-7"), retry_delays=(50,))
    wait_for(lambda: failures and global_broker.client.zcard(keys.delayed_key("state")) == 0, 30)
    global_broker.join("state", timeout=20_000)

    # The retry copied the database's flag (the handback's) instead of taking over again
    with db() as session:
        held = session.scalars(select(Conversation.operator_active).where(Conversation.customer_key == KEY)).one()
    assert held is False
    assert services.graph.operator_active(KEY) is False
    assert global_broker.dead_letters("state") == []


def test_a_task_sent_again_while_busy_keeps_the_limits_and_priority_it_was_sent_with(global_broker, redis_client,
                                                                                    runtime, start_worker, db):
    from actors.envelope import decode

    start_worker(global_broker)
    with conversation_lock(redis_client, KEY, ttl_s=60):
        # Runbook priority 0 is Dramatiq's 0: a priority, not "none"
        tasks.process_message_task.apply_async(args=[KEY, "b1", [inbound("w1", "hi")]], time_limit=900,
                                               soft_time_limit=800, priority=0)
        element = wait_for(lambda: redis_client.zrange(keys.delayed_key("default"), 0, -1))[0]
    options = decode(element, "default").message.options
    assert (options["time_limit"], options["soft_time_limit"], options["priority"]) == (900_000, 800_000, 0)


def test_a_task_sent_again_while_busy_stays_on_the_queue_it_was_sent_to(global_broker, redis_client, runtime,
                                                                         start_worker, db):
    from actors.envelope import decode

    # (process_message_task's own queue is default: this one was routed to state)
    start_worker(global_broker)
    with conversation_lock(redis_client, KEY, ttl_s=60):
        tasks.process_message_task.apply_async(args=[KEY, "b1", [inbound("w1", "hi")]], queue="state")
        element = wait_for(lambda: redis_client.zrange(keys.delayed_key("state"), 0, -1))[0]
    assert decode(element, "state").message.queue_name == "state"
    assert redis_client.zcard(keys.delayed_key("default")) == 0
