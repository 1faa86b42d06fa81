"""Celery's calling API on the actors: delay, apply_async and Dramatiq's send."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from dramatiq.errors import QueueNotFound

import tasks
from actors import keys
from facade import AsyncResult, SoftTimeLimitExceeded
from facade.api import from_dramatiq_priority, seconds_to_ms, to_dramatiq_priority


def waiting(redis_client, key="celery"):
    return [json.loads(e) for e in redis_client.lrange(key, 0, -1)]


def test_delay_returns_the_message_id(global_broker, redis_client):
    result = tasks.check_buffer_task.delay("c1", 3)
    assert isinstance(result, AsyncResult)
    assert result.id == result.task_id == str(result)
    (message,) = waiting(redis_client)
    assert message["message_id"] == result.id
    assert message["args"] == ["c1", 3]


def test_apply_async_takes_args_kwargs_and_a_task_id(global_broker, redis_client):
    result = tasks.update_langgraph_state_task.apply_async(args=["c1"], kwargs={"action": "takeover"}, task_id="my-id")
    assert result.id == "my-id"
    (message,) = waiting(redis_client, "state")
    assert message["kwargs"] == {"action": "takeover"} and message["message_id"] == "my-id"


def test_countdown_puts_the_message_in_the_delayed_set(global_broker, redis_client):
    before_ms = int(time.time() * 1000)
    tasks.check_buffer_task.apply_async(args=["c1", 1], countdown=3)
    assert redis_client.llen("celery") == 0
    ((_, score),) = redis_client.zrange(keys.delayed_key("default"), 0, -1, withscores=True)
    assert before_ms + 3000 <= score <= time.time() * 1000 + 3000


def test_eta_puts_the_message_in_the_delayed_set(global_broker, redis_client):
    eta = datetime.now(UTC) + timedelta(seconds=30)
    before = time.time()
    tasks.check_buffer_task.apply_async(args=["c1", 1], eta=eta)
    took_ms = (time.time() - before) * 1000
    ((_, score),) = redis_client.zrange(keys.delayed_key("default"), 0, -1, withscores=True)
    # The eta becomes a delay and the broker adds it to its own clock, read a moment later:
    # the score lies between the eta and the eta plus the call's duration (a loaded machine
    # can take several milliseconds), to the rounding of a millisecond.
    assert -1 <= score - eta.timestamp() * 1000 <= took_ms + 1


def test_a_past_eta_runs_now(global_broker, redis_client):
    tasks.check_buffer_task.apply_async(args=["c1", 1], eta=datetime.now(UTC) - timedelta(minutes=1))
    assert redis_client.llen("celery") == 1


def test_priority_uses_the_runbook_scale(global_broker, redis_client):
    tasks.update_message_status_task.delay({"id": "w", "status": "sent"})
    tasks.update_message_status_task.apply_async(args=[{"id": "w2", "status": "sent"}], priority=9)
    first_out = waiting(redis_client)[-1]
    assert first_out["args"][0]["id"] == "w2"
    assert first_out["priority"] == -9


def test_queue_sends_to_another_queue_by_either_name(global_broker, redis_client):
    tasks.check_buffer_task.apply_async(args=["c1", 1], queue="state")
    tasks.update_langgraph_state_task.apply_async(args=["c1", "handback"], queue="celery")
    assert redis_client.llen("state") == 1
    assert redis_client.llen("celery") == 1


def test_an_unknown_queue_is_refused(global_broker):
    with pytest.raises(QueueNotFound):
        tasks.check_buffer_task.apply_async(args=["c1", 1], queue="nowhere")


def test_expires_becomes_a_max_age(global_broker, redis_client):
    tasks.check_buffer_task.apply_async(args=["c1", 1], expires=60)
    assert waiting(redis_client)[0]["options"]["max_age"] == 60_000


@pytest.mark.parametrize(
    "options, error",
    [
        ({"priority": 10}, "priority must be from 0 to 9"),
        ({"priority": "high"}, "priority must be a whole number"),
        ({"countdown": -1}, "countdown must not be negative"),
        ({"countdown": 1, "eta": datetime.now(UTC)}, "either countdown or eta"),
        ({"eta": "tomorrow"}, "eta must be a datetime"),
        ({"args": "c1"}, "args must be a list or tuple"),
        ({"kwargs": ["x"]}, "kwargs must be a dict"),
    ],
)
def test_bad_call_options_fail_with_a_clear_error(global_broker, redis_client, options, error):
    with pytest.raises(ValueError, match=error):
        tasks.check_buffer_task.apply_async(**{"args": ["c1", 1], **options})
    assert redis_client.llen("celery") == 0


def test_an_option_celery_has_but_we_do_not_is_refused(global_broker):
    with pytest.raises(TypeError, match="link"):
        tasks.check_buffer_task.apply_async(args=["c1", 1], link=None)


def test_dramatiqs_own_send_still_works(global_broker, redis_client):
    message = tasks.check_buffer_task.send("c1", 1)
    assert waiting(redis_client)[0]["message_id"] == message.message_id


def test_unit_conversions():
    assert [to_dramatiq_priority(p) for p in (8, 7, 5, 3, 1)] == [-8, -7, -5, -3, -1]
    assert from_dramatiq_priority(to_dramatiq_priority(6)) == 6
    assert seconds_to_ms(2.5) == 2500
    assert issubclass(SoftTimeLimitExceeded, Exception)
