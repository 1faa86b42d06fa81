"""Cut-over: messages sent by the real Celery 5.7 client run on our real worker process.

The old deployment's web processes (and anything else still on Celery)
write Celery protocol 2 envelopes into ``celery`` and ``state``; a
``dramatiq`` worker subprocess runs the five tasks among them with their
arguments and dead-letters the rest with a clear error, never crashing.
"""

from __future__ import annotations

import pytest
from celery import Celery
from sqlalchemy import select

from app.db import Conversation, Message, MessageStatus
from tests.actors.test_worker_processes import processes, start_dramatiq  # noqa: F401  (fixture)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def celery_app(redis_url, redis_client):
    """The old deployment's producer: default queue ``celery``, the state tasks routed to ``state``."""
    app = Celery("tasks", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue="celery",
        task_routes={"tasks.update_langgraph_state_task": {"queue": "state"},
                     "tasks.sync_operator_message_to_graph_task": {"queue": "state"}},
        broker_connection_retry_on_startup=False,
    )
    yield app
    app.close()


def _one(db, query):
    with db() as session:
        return session.scalars(query).all()


def test_the_five_tasks_sent_by_celery_run_with_their_arguments(celery_app, global_broker, redis_client, db,
                                                                 processes):  # noqa: F811
    # Given messages the Celery client wrote: plain, in a priority side list, delayed, and a retry
    celery_app.send_task("tasks.process_message_task",
                         args=["15550001111", "batch-1", [{"wamid": "wamid.cut1", "text": "hola"}]])
    celery_app.send_task("tasks.update_langgraph_state_task", args=["15550002222", "takeover"],
                         kwargs={"operator_id": "op-7"}, priority=8)
    celery_app.send_task("update_message_status_task", countdown=1,
                         args=[{"id": "wamid.cut3", "status": "delivered", "timestamp": "9"}])
    celery_app.send_task("tasks.check_buffer_task", args=["15550004444", 1], retries=2)
    assert redis_client.exists("state\x06\x166") and redis_client.llen("state") == 0

    # When our worker runs
    processes.append(start_dramatiq({}))

    # Then each ran with its arguments, and nothing was dead-lettered
    wait_for(lambda: _one(db, select(Message.text).where(Message.wamid == "wamid.cut1")) == ["hola"])
    held = wait_for(lambda: _one(db, select(Conversation).where(Conversation.customer_key == "15550002222")))
    assert (held[0].operator_active, held[0].operator_id) == (True, "op-7")
    wait_for(lambda: _one(db, select(MessageStatus.status).where(MessageStatus.wamid == "wamid.cut3")) == ["delivered"])
    global_broker.join("default", timeout=20_000)
    global_broker.join("state", timeout=20_000)
    assert global_broker.dead_letters("default") == global_broker.dead_letters("state") == []
    assert not redis_client.exists("state\x06\x166")
    assert processes[0].poll() is None


def test_unknown_tasks_and_pickled_messages_are_dead_lettered_and_the_worker_carries_on(
        celery_app, global_broker, redis_client, db, processes):  # noqa: F811
    # Given a task we do not have, a pickled message for one we have, and a
    # message whose retries Celery already spent, for a task that fails transiently
    unknown = celery_app.send_task("tasks.add", args=[2, 2])
    pickled = celery_app.send_task("tasks.update_message_status_task", serializer="pickle",
                                   args=[{"id": "wamid.pickle", "status": "read", "timestamp": "3"}])
    spent = celery_app.send_task("tasks.test_flaky", args=["spent"], retries=3)
    processes.append(start_dramatiq({}))

    # When the worker meets them
    records = wait_for(lambda: len(found := global_broker.dead_letters("default")) == 3 and found)

    # Then all three are dead-lettered with an error that says why, the spent one after one run
    by_id = {r["message_id"]: r for r in records}
    assert "ActorNotFound" in by_id[unknown.id]["error"] and "add" in by_id[unknown.id]["error"]
    assert by_id[spent.id]["error"] == "ConnectionError('upstream down')"
    assert redis_client.lrange("test:runs", 0, -1) == [b"spent"]
    [pickle_record] = [r for r in records if r["message_id"] not in (unknown.id, spent.id)]
    assert f"Celery message {pickled.id} for tasks.update_message_status_task is serialised as " \
           "'application/x-python-serialize'" in pickle_record["error"]
    assert _one(db, select(MessageStatus).where(MessageStatus.wamid == "wamid.pickle")) == []

    # And the worker still runs the next message
    celery_app.send_task("tasks.update_message_status_task",
                         args=[{"id": "wamid.after", "status": "sent", "timestamp": "4"}])
    wait_for(lambda: _one(db, select(MessageStatus.status).where(MessageStatus.wamid == "wamid.after")) == ["sent"])
    assert processes[0].poll() is None
