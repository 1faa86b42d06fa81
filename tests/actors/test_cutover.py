"""Messages the old Celery deployment left in ``celery`` and ``state`` still run."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from actors import keys
from app.db import MessageStatus
from tests.support.waiting import wait_for


def celery_envelope(task: str, args: list, kwargs: dict | None = None, *, routing_key: str = "celery",
                    eta: str | None = None) -> bytes:
    """A Celery protocol 2 message, shaped as kombu writes it to Redis."""
    task_id = str(uuid.uuid4())
    body = json.dumps([args, kwargs or {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return json.dumps({
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": eta, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
            "parent_id": None, "argsrepr": repr(tuple(args)), "kwargsrepr": "{}", "origin": "gen1@vm",
            "ignore_result": False,
        },
        "properties": {
            "correlation_id": task_id, "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": routing_key}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    }).encode()



def test_a_celery_message_for_one_of_the_five_tasks_runs(global_broker, redis_client, runtime, start_worker, db):
    status = {"id": "wamid.legacy", "status": "delivered", "timestamp": "7"}
    redis_client.lpush("celery", celery_envelope("tasks.update_message_status_task", [status]))
    start_worker(global_broker)
    global_broker.join("default", timeout=10_000)
    with db() as session:
        assert session.scalars(select(MessageStatus.status).where(MessageStatus.wamid == "wamid.legacy")).all() == [
            "delivered"
        ]
    assert global_broker.dead_letters("default") == []


def test_a_celery_message_for_an_unknown_task_is_dead_lettered_with_a_clear_error(global_broker, redis_client,
                                                                                   runtime, start_worker):
    redis_client.lpush("state", celery_envelope("tasks.add", [2, 2], routing_key="state"))
    start_worker(global_broker)
    (record,) = wait_for(lambda: global_broker.dead_letters("state"))
    assert "add" in record["error"] and "ActorNotFound" in record["error"]
    assert record["message"]["options"]["celery_task"] == "tasks.add"


def test_a_celery_message_with_a_future_eta_waits_in_the_delayed_set(global_broker, redis_client, runtime,
                                                                      start_worker):
    eta = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    redis_client.lpush("celery", celery_envelope("tasks.check_buffer_task", ["c1", 1], eta=eta))
    start_worker(global_broker)
    ((element, score),) = wait_for(lambda: redis_client.zrange(keys.delayed_key("default"), 0, -1, withscores=True))
    assert b'"actor_name":"check_buffer_task"' in element
    assert abs(score / 1000 - datetime.fromisoformat(eta).timestamp()) < 1
    assert redis_client.llen("celery") == 0
