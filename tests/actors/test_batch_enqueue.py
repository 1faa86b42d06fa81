"""Batch enqueue against the real Redis: the layout, ids, hooks and delays of single sends, in one round trip."""

from __future__ import annotations

import json
import time

import dramatiq
import pytest
from dramatiq import Message, Middleware
from dramatiq.errors import QueueNotFound
from dramatiq.middleware import MiddlewareError

from actors import batch, keys
from actors.batch import BATCH_CHUNK, PartialEnqueue, send_many
from actors.envelope import decode, encode
from actors.setup import build_broker
from app.config import Config
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import wait_for


def declare(broker, name="noop", queue="default", priority=0):
    def fn(*args, **kwargs):
        return None

    return dramatiq.actor(fn, actor_name=name, queue_name=queue, priority=priority, broker=broker)


def ids(redis_client, key):
    return [decode(raw, "default").message.message_id for raw in redis_client.lrange(key, 0, -1)]


class RecordingHooks(Middleware):
    """Records the enqueue hooks, and what waited in Redis when each ran."""

    def __init__(self, client):
        self.client = client
        self.calls: list[tuple[str, str, int | None, int]] = []
        self.refuse: str | None = None

    def before_enqueue(self, broker, message, delay):
        if message.message_id == self.refuse:
            raise MiddlewareError(f"refused {message.message_id}")
        self.calls.append(("before", message.message_id, delay, self.client.llen("celery")))

    def after_enqueue(self, broker, message, delay):
        self.calls.append(("after", message.message_id, delay, self.client.llen("celery")))


def test_a_batch_leaves_the_queues_as_the_same_single_sends_would(make_broker, redis_client):
    # Given messages of mixed priorities for both queues, some already waiting
    broker = make_broker()
    low, high, state = declare(broker, "low", priority=0), declare(broker, "high", priority=-5), \
        declare(broker, "st", "state", priority=-8)
    waiting = broker.enqueue(low.message(0))
    messages = [low.message(1), high.message(2), state.message(3), low.message(4),
                high.message_with_options(args=(5,), priority=-9), state.message(6)]

    # When they are sent in one batch
    sent = broker.enqueue_many(messages)

    # Then each keeps its id, and the lists are what one send each gives
    assert [m.message_id for m in sent] == [m.message_id for m in messages]
    batch_default, batch_state = redis_client.lrange("celery", 0, -1), redis_client.lrange("state", 0, -1)
    redis_client.delete("celery", "state")
    broker.enqueue(waiting)
    for message in messages:
        broker.enqueue(message)
    assert redis_client.lrange("celery", 0, -1) == batch_default
    assert redis_client.lrange("state", 0, -1) == batch_state
    # the most urgent at the tail (consumers take from the right)
    assert ids(redis_client, "celery")[-1] == messages[4].message_id
    assert len(batch_default) == 5 and len(batch_state) == 2


def test_send_many_sends_one_message_per_call_in_order(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker, "noop")

    sent = send_many(actor, [("a",), ["b"], ("c", 1)])

    assert [m.args for m in sent] == [("a",), ("b",), ("c", 1)]
    # oldest nearest the tail
    assert ids(redis_client, "celery") == [m.message_id for m in reversed(sent)]


def test_more_than_a_chunk_goes_in_one_script_call_per_chunk(make_broker, redis_client, monkeypatch):
    broker = make_broker()
    actor = declare(broker, "noop")
    calls = []
    real = broker.scripts["enqueue_many"]
    monkeypatch.setitem(broker.scripts, "enqueue_many",
                        lambda keys, args: calls.append(len(args) - 1) or real(keys=keys, args=args))

    sent = send_many(actor, [(n,) for n in range(BATCH_CHUNK + 5)])

    assert calls == [BATCH_CHUNK, 5]
    assert redis_client.llen("celery") == BATCH_CHUNK + 5
    assert ids(redis_client, "celery")[-1] == sent[0].message_id


def test_a_delayed_batch_waits_in_the_delayed_set_and_wakes_the_scheduler(make_broker, redis_client):
    # Given a broker with an actor on each queue
    broker = make_broker()
    on_default, on_state = declare(broker, "a"), declare(broker, "b", "state")
    before_ms = time.time() * 1000

    # When a batch is sent with a delay
    sent = broker.enqueue_many([on_default.message(1), on_state.message(2), on_default.message(3)], delay=60_000)

    # Then nothing waits in the queues, each sits in its queue's delayed set due in 60 s, and the
    # scheduler is woken
    assert redis_client.llen("celery") == 0 and redis_client.llen("state") == 0
    default_delayed = redis_client.zrange(keys.delayed_key("default"), 0, -1, withscores=True)
    assert {decode(raw, "default").message.message_id for raw, _ in default_delayed} == \
        {sent[0].message_id, sent[2].message_id}
    # due in 60 s by Redis's clock (the same machine's here), all at the same moment
    assert all(before_ms + 59_000 < eta < before_ms + 65_000 for _, eta in default_delayed)
    assert len({eta for _, eta in default_delayed}) == 1
    assert redis_client.zcard(keys.delayed_key("state")) == 1
    assert redis_client.lrange(keys.wake_key(), 0, -1) == [b"1"]


def test_a_short_delay_is_promoted_into_the_queue_when_due(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker, "noop")
    sent = send_many(actor, [(1,), (2,)], delay_ms=50)

    assert redis_client.llen("celery") == 0
    wait_for(lambda: broker.promote_due() >= -1 and redis_client.llen("celery") == 2, timeout_s=10)
    assert sorted(ids(redis_client, "celery")) == sorted(m.message_id for m in sent)
    assert redis_client.zcard(keys.delayed_key("default")) == 0


def test_a_message_that_cannot_be_sent_stops_the_batch_before_anything_is_sent(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker, "noop")
    unknown_queue = Message(queue_name="nowhere", actor_name="noop", args=(), kwargs={}, options={})

    with pytest.raises(QueueNotFound):
        broker.enqueue_many([actor.message(1), unknown_queue, actor.message(2)])
    with pytest.raises(TypeError):
        broker.enqueue_many([actor.message(1), actor.message(object())])
    with pytest.raises(ValueError, match="item 1 is a str"):
        send_many(actor, [(1,), "oops"])

    assert redis_client.llen("celery") == 0


def test_hooks_run_for_every_message_before_and_after_the_send(make_broker, redis_client):
    # Given a middleware with enqueue hooks
    broker = make_broker()
    hooks = RecordingHooks(redis_client)
    broker.add_middleware(hooks)
    actor = declare(broker, "noop")

    # When a batch of three is sent
    sent = send_many(actor, [(1,), (2,), (3,)])

    # Then every before hook ran while nothing was sent, and every after hook once all were
    ids_sent = [m.message_id for m in sent]
    assert hooks.calls == [("before", i, None, 0) for i in ids_sent] + [("after", i, None, 3) for i in ids_sent]


def test_a_hook_that_refuses_one_message_stops_the_whole_batch(make_broker, redis_client):
    broker = make_broker()
    hooks = RecordingHooks(redis_client)
    broker.add_middleware(hooks)
    actor = declare(broker, "noop")
    messages = [actor.message(n) for n in range(3)]
    hooks.refuse = messages[1].message_id

    with pytest.raises(MiddlewareError):
        broker.enqueue_many(messages)

    assert redis_client.llen("celery") == 0
    assert [call[0] for call in hooks.calls] == ["before"]


def test_a_single_send_still_runs_hooks_added_after_the_first_send(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker, "noop")
    actor.send(0)  # the broker has looked its hooks up once
    hooks = RecordingHooks(redis_client)
    broker.add_middleware(hooks)

    message = actor.send(1)

    assert hooks.calls == [("before", message.message_id, None, 1), ("after", message.message_id, None, 2)]


def test_an_empty_batch_sends_nothing(make_broker, redis_client):
    broker = make_broker()
    declare(broker, "noop")
    assert broker.enqueue_many([]) == []
    assert redis_client.dbsize() == 0


def test_a_batch_on_the_celery_alias_lands_in_default(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker, "noop")
    sent = broker.enqueue_many([actor.message(1).copy(queue_name="celery")])
    assert sent[0].queue_name == "default" and redis_client.llen("celery") == 1


@pytest.mark.slow
def test_when_redis_fails_half_way_the_error_says_which_messages_are_queued(tmp_path, monkeypatch):
    # Given a batch of two and a half chunks, on a Redis that keeps its data
    server = PrivateRedis(tmp_path, password="pw")
    broker = build_broker(Config(redis_uri=server.url, worker_metrics_port=0))
    try:
        actor = declare(broker, "noop")
        real = broker.scripts["enqueue_many"]
        calls = []

        def second_call_finds_redis_gone(keys, args):
            calls.append(len(args) - 1)
            if len(calls) == 2:
                server.stop()
            return real(keys=keys, args=args)

        monkeypatch.setitem(broker.scripts, "enqueue_many", second_call_finds_redis_gone)
        calls_args = [(n,) for n in range(2 * BATCH_CHUNK + 500)]

        # When Redis goes away before the second chunk
        with pytest.raises(PartialEnqueue) as caught:
            send_many(actor, calls_args)

        # Then the error says the first chunk is queued, the second unknown, the rest not sent,
        # and Redis holds exactly the first chunk: a chunk is never half in its queue
        error = caught.value
        assert [m.args[0] for m in error.sent] == list(range(BATCH_CHUNK))
        assert [m.args[0] for m in error.unknown] == list(range(BATCH_CHUNK, 2 * BATCH_CHUNK))
        assert [m.args[0] for m in error.unsent] == list(range(2 * BATCH_CHUNK, 2 * BATCH_CHUNK + 500))
        assert isinstance(error, dramatiq.errors.ConnectionClosed)
        server.start()
        assert broker.client.llen("celery") == BATCH_CHUNK
    finally:
        broker.close()
        server.stop()


def test_the_envelope_is_the_messages_fields_with_the_priority_first():
    message = Message(queue_name="default", actor_name="noop", args=("é", 1), kwargs={"k": [1]},
                      options={"retries": 2})
    raw = encode(message, -5)
    assert raw.startswith(b'{"priority":-5,')
    assert json.loads(raw) == {"priority": -5, **message.asdict(), "args": ["é", 1]}
    assert "é".encode() in raw  # not escaped: the list element stays as short as JSON allows


def test_send_many_refuses_a_broker_without_batches():
    from dramatiq.brokers.stub import StubBroker

    broker = StubBroker()
    actor = declare(broker, "noop")
    with pytest.raises(TypeError, match="cannot send a batch"):
        batch.send_many(actor, [(1,)])
