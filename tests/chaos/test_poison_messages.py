"""Scenario 6 (hostile input), the queue side: task messages with malformed
arguments pushed straight into Redis, as a buggy or hostile producer (or a
half-migrated Celery deployment) would leave them, reach a real ``dramatiq
actors`` worker.  Each is dead-lettered at once (no retry) with an error that
says what is wrong, and the worker keeps running: a good message sent after
them is processed, /health still counts the node, nothing stays in flight."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from dramatiq import Message
from sqlalchemy import select

from actors import keys
from app.db import MessageStatus
from tests.chaos.hostile import crash_lines, inflight_elements, worker_pids
from tests.support.stack import running_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hostile_stack(engine, checkpoints, tmp_path_factory):
    """The module's own stack: gunicorn and a ``dramatiq actors`` node of one process, two threads."""
    with running_stack(tmp_path_factory.mktemp("poison")) as stack:
        yield stack


def ours(actor: str, args: Any, *, queue: str = "default", kwargs: Any = None, options: Any = None,
         message_id: Any = None, **fields: Any) -> bytes:
    """Our envelope with any field spoilt (``...`` leaves a field out)."""
    data: dict[str, Any] = {"priority": 0, "queue_name": queue, "actor_name": actor, "args": args,
                            "kwargs": {} if kwargs is None else kwargs, "options": {} if options is None else options,
                            "message_id": f"hostile-{uuid.uuid4().hex[:12]}" if message_id is None else message_id,
                            "message_timestamp": int(time.time() * 1000)}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def celery(task: str, body: bytes, *, encoding: str = "base64", content_type: str = "application/json") -> bytes:
    """A Celery protocol 2 envelope whose body is ``body`` (its bytes as they are)."""
    task_id = str(uuid.uuid4())
    return json.dumps({
        "body": base64.b64encode(body).decode() if encoding == "base64" else body.decode(),
        "content-encoding": "utf-8", "content-type": content_type,
        "headers": {"lang": "py", "task": task, "id": task_id, "eta": None, "expires": None, "retries": 0,
                    "root_id": task_id, "parent_id": None, "argsrepr": "()", "kwargsrepr": "{}"},
        "properties": {"correlation_id": task_id, "delivery_mode": 2, "priority": 0, "body_encoding": encoding,
                       "delivery_info": {"exchange": "", "routing_key": "celery"}, "delivery_tag": task_id},
    }).encode()


STATUS = {"id": "wamid.hostile-status", "status": "delivered", "timestamp": "1749416390"}
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

#: name -> (queue list, element (or what makes it when pushed), words the dead letter's error must hold)
POISON: dict[str, tuple[str, bytes | Callable[[], bytes], str]] = {
    # not a message at all
    "garbage bytes": ("celery", b"\xff\xfe\x00\x9c garbage \x00", "not JSON"),
    "truncated JSON": ("celery", b'{"priority":0,"queue_name":"default","actor_name":"check_bu', "not JSON"),
    "a JSON list": ("celery", b"[1, 2, 3]", "expected a JSON object, got list"),
    "JSON null": ("state", b"null", "expected a JSON object, got NoneType"),
    "an object that is no message": ("celery", b'{"hello": "world"}', "neither a Dramatiq nor a Celery"),
    "deeply nested JSON": ("celery", b"[" * 100_000 + b"]" * 100_000, "malformed message"),
    "an empty element": ("state", b"", "not JSON"),
    # our envelope, spoilt
    "args that are not a list": ("celery", ours("check_buffer_task", "c1"), "args must be a list"),
    "no message id": ("celery", ours("check_buffer_task", ["c1", 1], message_id=...),
                      "message_id"),
    "a timestamp that is not a number": ("celery", ours("check_buffer_task", ["c1", 1], message_timestamp="soon"),
                                         "message_timestamp must be milliseconds"),
    "an unknown actor": ("celery", ours("no_such_task", [1, 2]), "ActorNotFound"),
    "an actor name with a lone surrogate": ("celery", ours("check_buffer_task\ud800", ["c1", 1]),
                                            "actor_name is not valid Unicode text"),
    "too few arguments": ("celery", ours("process_message_task", []), "missing 3 required positional arguments"),
    "too many arguments": ("celery", ours("check_buffer_task", ["c1", 1, 2, 3]), "takes 2 positional arguments"),
    "an unknown keyword argument": ("celery", ours("check_buffer_task", ["c1", 1], kwargs={"bogus": True}),
                                    "unexpected keyword argument 'bogus'"),
    "a number where a string is expected": ("celery", ours("check_buffer_task", [12345, 1]),
                                            "conversation must be a non-empty string"),
    "a string where a number is expected": ("celery", ours("check_buffer_task", ["c1", "1"]),
                                            "seq must be a whole number"),
    "an object where a list is expected": ("celery", ours("process_message_task", ["c1", "b1", {"wamid": "w"}]),
                                           "messages must be a non-empty list of objects"),
    "a message without its wamid": ("celery", ours("process_message_task", ["c1", "b1", [{"text": "hi"}]]),
                                    "message.wamid must be a non-empty string"),
    "a huge argument": ("celery", ours("check_buffer_task", ["c" * 1_000_000, 1]),
                        "conversation must be at most 128 characters"),
    "a status that is not one": ("celery", ours("update_message_status_task", [{"id": 5}]), "status"),
    "a lone surrogate in an argument": ("celery", ours("check_buffer_task", ["c1\ud800", 1]),
                                        "conversation must be valid Unicode text"),
    "a lone surrogate in a message": ("celery", ours("process_message_task", ["c1", "b1", [
        {"wamid": "w-sur", "text": "hi \udfff", "wa_id": "c1"}]]), "message.text is not valid Unicode text"),
    "a timestamp of Infinity in a message": ("celery", ours("process_message_task", ["c1", "b1", [
        {"wamid": "w-inf", "text": "hi", "wa_id": "c1", "timestamp": float("inf")}]]),
                                             "message.timestamp: a timestamp must be seconds, got inf"),
    "a timestamp no BIGINT holds": ("celery", ours("process_message_task", ["c1", "b1", [
        {"wamid": "w-big", "text": "hi", "wa_id": "c1", "timestamp": 10**30}]]),
                                    "message.timestamp: a timestamp must be seconds from 0 to 2**63-1"),
    "an action the state task does not know": (
        "state", ours("update_langgraph_state_task", ["c1", "explode"], queue="state"), "action must be one of"),
    "an operator message without its text": (
        "state", ours("sync_operator_message_to_graph_task", ["c1"], queue="state"), "missing"),
    "a queue name no worker consumes": ("celery", ours("check_buffer_task", [7, 1], queue="nowhere"),
                                        "conversation must be a non-empty string"),
    "the queue's Celery name": ("celery", ours("check_buffer_task", [8, 1], queue="celery"),
                                "conversation must be a non-empty string"),
    "a message id with a lone surrogate": ("celery", ours("check_buffer_task", [7, 1], message_id="id-\ud800"),
                                           "message_id is not valid Unicode text"),
    # (an eta waits in the delayed set, not in flight in a worker's memory; then the task refuses its args)
    "options: an eta 1.5 s ahead": ("celery", lambda: ours("check_buffer_task", [10, 1],
                                                           options={"eta": int(time.time() * 1000) + 1500}),
                                    "conversation must be a non-empty string"),
    "options: an eta that is not a time": ("celery", ours("check_buffer_task", ["c1", 1], options={"eta": "soon"}),
                                           "options.eta must be milliseconds"),
    # (the middleware reads these after the task ran, where a failure was only logged and the message acked)
    "options: retries that are not a number": ("celery", ours("check_buffer_task", ["c1", 1],
                                                              options={"retries": "many"}),
                                               "options.retries must be a whole number"),
    "options: max_retries that are not a number": ("celery", ours("check_buffer_task", ["c1", 1],
                                                                  options={"max_retries": [3]}),
                                                   "options.max_retries must be a whole number"),
    "options: retry delays that are not numbers": ("celery", ours("check_buffer_task", ["c1", 1],
                                                                  options={"retry_delays": "x"}),
                                                   "options.retry_delays must be a list of milliseconds"),
    "options: a time limit that is not a number": ("celery", ours("check_buffer_task", ["c1", 1],
                                                                  options={"time_limit": "long"}),
                                                   "options.time_limit must be milliseconds"),
    # Celery protocol 2, spoilt
    "Celery: an unknown task": ("celery", celery("tasks.add", json.dumps([[2, 2], {}, EMBED]).encode()),
                                "ActorNotFound"),
    "Celery: a body that is not base64": ("celery", celery("tasks.check_buffer_task", b"%%%", encoding="utf-8")
                                          .replace(b'"body_encoding": "utf-8"', b'"body_encoding": "base64"'),
                                          "unreadable body"),
    "Celery: a body that is not [args, kwargs, embed]": (
        "celery", celery("tasks.check_buffer_task", json.dumps({"args": ["c1", 1]}).encode()), "unreadable body"),
    "Celery: args that are an object": (
        "celery", celery("tasks.check_buffer_task", json.dumps([{"c": 1}, {}, EMBED]).encode()),
        "body must be [args, kwargs, embed]"),
    "Celery: wrong arity": ("celery", celery("tasks.process_message_task", json.dumps([["c1"], {}, EMBED]).encode()),
                            "missing 2 required positional arguments"),
    "Celery: wrong types": ("state", celery("tasks.update_langgraph_state_task",
                                            json.dumps([[["c1"], 5], {}, EMBED]).encode()),
                            "conversation must be a non-empty string"),
    "Celery: pickle": ("celery", celery("tasks.check_buffer_task", b"\x80\x04K\x01.", encoding="base64",
                                        content_type="application/x-python-serialize"),
                       "only application/json is accepted"),
}




def test_malformed_task_messages_are_dead_lettered_at_once_and_the_worker_keeps_working(hostile_stack, db,
                                                                                         figures):
    stack = hostile_stack
    stack.reset()
    main_pid, children = worker_pids(stack)
    started = time.monotonic()

    # Given every poison message at once, in the runbook's two lists
    pushed = {name: (list_key, element() if callable(element) else element, words)
              for name, (list_key, element, words) in POISON.items()}
    for list_key, element, _ in pushed.values():
        stack.redis.lpush(list_key, element)

    # Then each is dead-lettered, none retried (no delayed copy, retries 0)
    delayed_seen: list[int] = []

    def all_dead() -> list[dict[str, Any]] | None:
        delayed_seen.append(stack.redis.zcard(keys.delayed_key("default"))
                            + stack.redis.zcard(keys.delayed_key("state")))
        dead = stack.dead_letters()
        return dead if len(dead) >= len(POISON) else None

    try:
        dead = wait_for(all_dead, timeout_s=60, interval_s=0.05)
    except AssertionError:
        dead = stack.dead_letters()
        raise AssertionError(f"{len(dead)} of {len(POISON)} dead-lettered; not: {_unmatched(pushed, dead)}\n"
                             f"{stack.logs()}") from None
    dead_at = time.monotonic()
    assert len(dead) == len(POISON)
    assert _unmatched(pushed, dead) == [], "not dead-lettered with their error"
    # (the only delayed message was the one with an eta: nothing was retried)
    assert max(delayed_seen) <= 1, max(delayed_seen)
    assert stack.redis.zcard(keys.delayed_key("default")) + stack.redis.zcard(keys.delayed_key("state")) == 0

    # And the worker keeps working: a good message sent after them is processed
    stack.broker.declare_queue("default")
    stack.broker.enqueue(Message(queue_name="default", actor_name="update_message_status_task", args=(STATUS,),
                                 kwargs={}, options={}))

    def stored() -> list[str]:
        with db() as session:
            return session.scalars(select(MessageStatus.status).where(MessageStatus.wamid == STATUS["id"])).all()
    assert wait_for(stored, timeout_s=30) == ["delivered"]
    stack.wait_idle()
    assert inflight_elements(stack) == 0
    assert worker_pids(stack) == (main_pid, children), "a worker process crashed (or was replaced)"
    assert crash_lines(stack) == []
    health = stack.http.get("/health")
    assert health.status_code == 200 and health.json()["celery"] == "1 worker(s) active", health.text
    figures(poison_messages=len(POISON), dead_lettered=len(dead), retried=0, worker_crashes=0,
            stuck_in_flight=inflight_elements(stack), seconds_to_dead_letter_all=round(dead_at - started, 2))


def _unmatched(pushed: dict[str, tuple[str, bytes, str]], dead: list[dict[str, Any]]) -> list[str]:
    """The cases no dead letter stands for (with its own error, and no retry)."""
    unmatched = dict(pushed)
    for record in dead:
        assert (record["message"] or {}).get("options", {}).get("retries", 0) == 0, record
        found = [name for name, (_, element, words) in unmatched.items()
                 if words in record["error"] and _same_element(record, element)]
        assert found, f"a dead letter no case explains: {json.dumps(record)[:600]}"
        unmatched.pop(found[0])
    return list(unmatched)


def _same_element(record: dict[str, Any], element: bytes) -> bool:
    """Whether ``record`` is the dead letter of ``element``."""
    if record.get("raw_b64"):
        return base64.b64decode(record["raw_b64"]) == element
    if record.get("raw") is not None:
        return record["raw"] == element.decode("utf-8", "replace")
    message = record["message"]
    try:
        data = json.loads(element)
    except ValueError:
        return False
    if "headers" in data:
        return message["message_id"] == data["headers"]["id"]
    return message["message_id"] == str(data.get("message_id")) and message["actor_name"] == data["actor_name"]
