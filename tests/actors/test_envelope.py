"""Reading a queue element: what a hand-pushed (or hostile) element may not do to a worker."""

from __future__ import annotations

import json

import pytest

from actors.envelope import UndecodableMessage, decode


def element(**fields) -> bytes:
    data = {"priority": 0, "queue_name": "default", "actor_name": "check_buffer_task", "args": ["c1", 1],
            "kwargs": {}, "options": {}, "message_id": "m1", "message_timestamp": 1}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


@pytest.mark.parametrize("named", ["nowhere", "celery", "state"])
def test_a_message_is_one_of_the_queue_it_was_read_from_whatever_queue_it_names(named):
    # (the worker hands a finished message to the consumer of the queue it names:
    # one it has no consumer for ended the worker thread, the message stuck in flight)
    assert decode(element(queue_name=named), "default").message.queue_name == "default"


@pytest.mark.parametrize(("field", "value"), [("message_id", "m-\ud800"), ("actor_name", "check_buffer_task\udfff")])
def test_an_id_that_redis_cannot_store_is_undecodable(field, value):
    # (its dead letter and its task history are written under it: every write failed, the message stuck)
    with pytest.raises(UndecodableMessage, match=f"{field} is not valid Unicode text"):
        decode(element(**{field: value}), "default")


@pytest.mark.parametrize(("fields", "reason"), [
    ({"message_timestamp": "soon"}, "message_timestamp must be milliseconds, got 'soon'"),
    ({"message_timestamp": float("inf")}, "message_timestamp must be milliseconds, got inf"),
    ({"message_id": ..., "kwargs": ...}, "malformed message: no kwargs, message_id"),
    ({"args": {"a": 1}}, "args must be a list"),
])
def test_a_malformed_envelope_says_which_field_is_wrong(fields, reason):
    with pytest.raises(UndecodableMessage, match=reason):
        decode(element(**fields), "default")


def test_a_celery_task_id_that_redis_cannot_store_is_undecodable():
    raw = json.dumps({"body": "W10=", "content-type": "application/json",
                      "headers": {"task": "tasks.check_buffer_task", "id": "t-\ud800"}}).encode()
    with pytest.raises(UndecodableMessage, match="headers.id is not valid Unicode text"):
        decode(raw, "default")


@pytest.mark.parametrize(("options", "reason"), [
    ({"retries": "many"}, "options.retries must be a whole number, got 'many'"),
    ({"retries": -1}, "options.retries must be a whole number"),
    ({"max_retries": [3]}, "options.max_retries must be a whole number"),
    ({"priority": 1.5}, "options.priority must be a whole number"),
    ({"time_limit": "long"}, "options.time_limit must be milliseconds, got 'long'"),
    ({"eta": float("nan")}, "options.eta must be milliseconds"),
    ({"retry_delays": [5, "x"]}, "options.retry_delays must be a list of milliseconds"),
])
def test_options_the_middleware_reads_must_have_their_types(options, reason):
    # (read after the task ran, where a failure is only logged: "retries": "many" was acked as a success)
    with pytest.raises(UndecodableMessage, match=reason):
        decode(element(options=options), "default")


def test_an_eta_in_the_options_waits_in_the_delayed_set_not_in_a_workers_memory():
    decoded = decode(element(options={"eta": 5_000, "retries": 1}), "default", now_ms=1_000)
    assert decoded.eta_ms == 5_000 and decoded.message.options == {"retries": 1}
    assert decode(element(options={"eta": 500}), "default", now_ms=1_000).eta_ms is None  # due: runs now


def test_options_of_the_right_types_are_kept():
    options = {"retries": 2, "max_retries": 3, "priority": -5, "time_limit": 900_000, "retry_delays": [50, 100.5],
               "max_age": None, "celery_task": "tasks.check_buffer_task"}
    assert decode(element(options=options), "default").message.options == options
