"""The broker against the real Redis: layout, ordering, acks, delays, recovery."""

from __future__ import annotations

import threading
import time

import dramatiq
import pytest

from actors import keys
from actors.consumer import InflightMessage
from tests.support.waiting import wait_for


def declare(broker, name="noop", queue="default", priority=0):
    def fn(*args, **kwargs):
        return None

    return dramatiq.actor(fn, actor_name=name, queue_name=queue, priority=priority, broker=broker)


def drain(consumer, count, timeout_s=5.0):
    """Take ``count`` messages off ``consumer`` (acking none)."""
    taken, deadline = [], time.monotonic() + timeout_s
    while len(taken) < count and time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            taken.append(message)
    return taken


def test_waiting_messages_are_lists_named_celery_and_state(make_broker, redis_client):
    # Given a broker with one actor on each queue
    broker = make_broker()
    on_default, on_state = declare(broker, "a", "default"), declare(broker, "b", "state")

    # When three default and two state messages are sent
    for _ in range(3):
        on_default.send()
    for _ in range(2):
        on_state.send()

    # Then LLEN counts exactly the waiting messages, and nothing else is top-level
    assert redis_client.llen("celery") == 3
    assert redis_client.llen("state") == 2
    top_level = {k.decode() for k in redis_client.keys("*") if not k.startswith(b"dramatiq:")}
    assert top_level == {"celery", "state"}


def test_celery_is_another_name_of_the_default_queue(make_broker, redis_client):
    broker = make_broker()
    declare(broker, "a", "default")
    broker.declare_queue("celery")
    assert broker.get_declared_queues() == {"default"}
    consumer = broker.consume("celery", prefetch=1, timeout=100)
    assert consumer.queue_key == "celery"


def test_more_urgent_messages_are_consumed_first_and_fifo_within_a_priority(make_broker, redis_client):
    broker = make_broker()
    low = declare(broker, "low", priority=-1)
    mid = declare(broker, "mid", priority=-3)
    high = declare(broker, "high", priority=-5)
    sent = [low.send(1), high.send(1), mid.send(1), high.send(2), low.send(2), mid.send(2)]
    assert redis_client.llen("celery") == len(sent)

    consumer = broker.consume("default", prefetch=1, timeout=100)
    order = []
    for _ in sent:
        (message,) = drain(consumer, 1)
        order.append((message.actor_name, message.args[0]))
        consumer.ack(message)
    assert order == [("high", 1), ("high", 2), ("mid", 1), ("mid", 2), ("low", 1), ("low", 2)]


def test_a_per_message_priority_overrides_the_actors(make_broker):
    broker = make_broker()
    actor = declare(broker, "a", priority=-1)
    actor.send_with_options(args=("late",))
    actor.send_with_options(args=("urgent",), priority=-9)
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (first,) = drain(consumer, 1)
    assert first.args == ("urgent",)


def test_a_message_is_in_flight_until_acked(make_broker, redis_client):
    broker = make_broker()
    declare(broker).send()
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (message,) = drain(consumer, 1)

    assert redis_client.llen("celery") == 0
    assert redis_client.llen(message.inflight_key) == 1
    consumer.ack(message)
    assert redis_client.llen(message.inflight_key) == 0
    assert broker.queue_sizes("default") == {"waiting": 0, "delayed": 0, "inflight": 0, "dead": 0}


def test_prefetch_limits_what_a_consumer_holds(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker)
    for i in range(10):
        actor.send(i)
    consumer = broker.consume("default", prefetch=3, timeout=50)
    held = drain(consumer, 10, timeout_s=0.5)
    assert len(held) == 3
    assert redis_client.llen("celery") == 7
    consumer.ack(held[0])
    assert len(drain(consumer, 1)) == 1


def test_requeued_messages_go_back_in_front_of_their_priority(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker)
    for i in range(4):
        actor.send(i)
    consumer = broker.consume("default", prefetch=2, timeout=100)
    held = drain(consumer, 2)
    assert [m.args[0] for m in held] == [0, 1]

    consumer.requeue(held)

    assert redis_client.llen("celery") == 4
    assert redis_client.llen(held[0].inflight_key) == 0
    order = []
    for _ in range(4):
        (m,) = drain(consumer, 1)
        order.append(m.args[0])
        consumer.ack(m)
    assert order == [0, 1, 2, 3]


def test_a_requeued_message_goes_behind_more_urgent_ones_and_before_its_peers(make_broker):
    broker = make_broker()
    low, high = declare(broker, "low", priority=-1), declare(broker, "high", priority=-5)
    low.send("a")
    low.send("b")
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (held,) = drain(consumer, 1)
    high.send("h")

    consumer.requeue([held])

    order = []
    for _ in range(3):
        (m,) = drain(consumer, 1)
        order.append(m.args[0])
        consumer.ack(m)
    assert order == ["h", "a", "b"]


def test_nack_keeps_the_message_with_its_error_in_the_dead_letter_set(make_broker, redis_client):
    broker = make_broker()
    declare(broker).send("x")
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (message,) = drain(consumer, 1)
    message.stuff_exception(ValueError("boom"))

    consumer.nack(message)

    (record,) = broker.dead_letters("default")
    assert record["message_id"] == message.message_id
    assert record["error"] == "ValueError('boom')"
    assert record["message"]["args"] == ["x"]
    assert redis_client.llen(message.inflight_key) == 0
    assert redis_client.llen("celery") == 0


def test_dead_letters_expire_after_their_ttl(make_broker, redis_client):
    broker = make_broker(dead_letter_ttl_ms=300)
    actor = declare(broker)
    consumer = broker.consume("default", prefetch=2, timeout=100)
    actor.send(1)
    (first,) = drain(consumer, 1)
    consumer.nack(first)
    time.sleep(0.4)
    actor.send(2)
    (second,) = drain(consumer, 1)
    consumer.nack(second)
    assert [r["message"]["args"] for r in broker.dead_letters("default")] == [[2]]


def test_the_upkeep_drops_expired_dead_letters_even_when_no_new_one_comes(make_broker, redis_client):
    broker = make_broker(dead_letter_ttl_ms=200, heartbeat_timeout_ms=600)
    declare(broker).send(1)
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (message,) = drain(consumer, 1)
    consumer.nack(message)
    assert len(broker.dead_letters("default")) == 1
    wait_for(lambda: broker.dead_letters("default") == [], timeout_s=5)
    assert redis_client.hlen(keys.dead_messages_key("default")) == 0


def test_delayed_messages_wait_in_a_sorted_set_and_enter_the_queue_when_due(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker)
    sent_at = time.time()
    actor.send_with_options(args=(1,), delay=400)

    assert redis_client.llen("celery") == 0
    assert redis_client.zcard(keys.delayed_key("default")) == 1
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (message,) = drain(consumer, 1, timeout_s=5)
    waited = time.time() - sent_at
    assert waited >= 0.4
    assert redis_client.zcard(keys.delayed_key("default")) == 0
    assert message.args == (1,)


def test_an_earlier_delayed_message_wakes_the_scheduler(make_broker):
    # Given a worker process whose upkeep waits for a far-away message
    broker = make_broker()
    actor = declare(broker)
    consumer = broker.consume("default", prefetch=2, timeout=100)
    actor.send_with_options(args=("later",), delay=60_000)
    assert drain(consumer, 1, timeout_s=0.3) == []

    # When a message due sooner is scheduled by another process
    other = make_broker()
    declare(other).send_with_options(args=("sooner",), delay=300)

    # Then it is promoted on time, not after the far one
    (message,) = drain(consumer, 1, timeout_s=3)
    assert message.args == ("sooner",)


def test_an_idle_consumer_blocks_in_redis_instead_of_polling(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker)
    consumer = broker.consume("default", prefetch=1, timeout=2000)
    got = []
    thread = threading.Thread(target=lambda: got.extend(drain(consumer, 1, timeout_s=5)))
    thread.start()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        clients = redis_client.client_list()
        if any(c.get("cmd") == "blmove" for c in clients):
            break
        time.sleep(0.02)
    else:
        pytest.fail("no consumer is blocked in BLMOVE")
    actor.send("wake")
    thread.join(5)
    assert [m.args for m in got] == [("wake",)]


def test_two_consumers_racing_never_get_the_same_message(make_broker, redis_client):
    # Given two worker processes consuming one queue
    producer = make_broker()
    actor = declare(producer)
    brokers = [make_broker(), make_broker()]
    for b in brokers:
        declare(b)
    total = 2000
    for i in range(total):
        actor.send(i)

    # When both take and ack messages as fast as they can
    seen: list[list[int]] = [[], []]

    def run(i):
        consumer = brokers[i].consume("default", prefetch=8, timeout=100)
        idle = 0
        while idle < 5:
            message = next(consumer)
            if message is None:
                idle += 1
                continue
            seen[i].append(message.args[0])
            consumer.ack(message)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    # Then every message was delivered exactly once
    assert sorted(seen[0] + seen[1]) == list(range(total))
    assert seen[0] and seen[1]
    assert producer.queue_sizes("default")["inflight"] == 0


def test_the_messages_of_a_silent_worker_go_back_within_the_heartbeat_timeout(make_broker, redis_client):
    # Given a worker process holding two messages
    dying = make_broker(heartbeat_timeout_ms=1500)
    actor = declare(dying)
    actor.send(1)
    actor.send(2)
    held = drain(dying.consume("default", prefetch=2, timeout=100), 2)
    assert redis_client.llen("celery") == 0

    # When it stops heartbeating without a word (its upkeep thread dies)
    dying._upkeep._stopping.set()
    dying._upkeep.join(5)
    dying._upkeep = None
    died_at = time.monotonic()

    # Then a live worker gets them back, in their order, within the timeout
    survivor = make_broker(heartbeat_timeout_ms=1500)
    declare(survivor)
    consumer = survivor.consume("default", prefetch=2, timeout=100)
    back = drain(consumer, 2, timeout_s=5)
    assert time.monotonic() - died_at < 1.5
    assert [m.args[0] for m in back] == [1, 2]
    assert redis_client.llen(held[0].inflight_key) == 0
    assert redis_client.zscore(keys.HEARTBEATS, dying.broker_id) is None


def test_a_clean_close_leaves_no_heartbeat_or_in_flight_keys(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker)
    actor.send(1)
    consumer = broker.consume("default", prefetch=4, timeout=100)
    (message,) = drain(consumer, 1)
    consumer.ack(message)
    consumer.close()
    broker.close()
    assert redis_client.keys("dramatiq:*inflight*") == []
    assert redis_client.zcard(keys.HEARTBEATS) == 0


def test_messages_a_closed_consumer_could_not_give_back_are_recovered(make_broker, redis_client):
    # Given a consumer that moved messages in flight but handed out only one
    broker = make_broker()
    actor = declare(broker)
    for i in range(3):
        actor.send(i)
    consumer = broker.consume("default", prefetch=3, timeout=100)
    first = next(consumer)
    assert len(consumer.cache) == 2
    consumer.cache.clear()  # as if Redis was down when it closed
    consumer.close()

    # When the upkeep runs while the handed-out one is still busy
    broker.release_closed_inflight()
    assert redis_client.llen("celery") == 0

    # Then once that one is acked, the other two go back to the queue
    consumer.ack(first)
    broker.release_closed_inflight()
    assert redis_client.llen("celery") == 2
    assert redis_client.llen(first.inflight_key) == 0


def test_purge_empties_only_waiting_messages(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker)
    for i in range(3):
        actor.send(i)
    actor.send_with_options(args=("later",), delay=60_000)
    consumer = broker.consume("default", prefetch=1, timeout=100)
    (held,) = drain(consumer, 1)

    assert broker.purge("celery") == 2

    assert broker.queue_sizes("default") == {"waiting": 0, "delayed": 1, "inflight": 1, "dead": 0}
    assert isinstance(held, InflightMessage)


def test_unreadable_elements_are_dead_lettered_and_consuming_goes_on(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker)
    redis_client.lpush("celery", b"\xff not json")
    redis_client.lpush("celery", b'{"something": "else"}')
    actor.send("fine")
    consumer = broker.consume("default", prefetch=1, timeout=100)

    (message,) = drain(consumer, 1)

    assert message.args == ("fine",)
    errors = sorted(r["error"] for r in broker.dead_letters("default"))
    assert len(errors) == 2
    assert any("not JSON" in e for e in errors) and any("neither a Dramatiq nor a Celery" in e for e in errors)


def test_enqueue_on_an_undeclared_queue_is_refused(make_broker):
    broker = make_broker()
    actor = declare(broker)
    with pytest.raises(dramatiq.errors.QueueNotFound):
        broker.enqueue(actor.message().copy(queue_name="nowhere"))


def test_messages_left_in_celerys_priority_side_lists_join_their_queue_oldest_first(make_broker, redis_client):
    # Given what an old Celery producer left: kombu pushes on the left
    broker = make_broker()
    broker.declare_queue("default")
    broker.declare_queue("state")
    redis_client.lpush("state\x06\x166", b'{"first":1}', b'{"second":2}')
    redis_client.lpush("celery\x06\x169", b'{"third":3}')

    # When the upkeep adopts them (in batches)
    assert broker.adopt_celery_side_lists(batch=1) == 3

    # Then LLEN counts them, and the oldest is first in line (at the tail)
    assert redis_client.lrange("state", 0, -1) == [b'{"second":2}', b'{"first":1}']
    assert redis_client.lrange("celery", 0, -1) == [b'{"third":3}']
    assert not redis_client.exists("state\x06\x166", "celery\x06\x169")
    assert broker.adopt_celery_side_lists() == 0


def test_a_side_list_key_of_another_type_does_not_break_the_adoption(make_broker, redis_client):
    broker = make_broker()
    broker.declare_queue("default")
    broker.declare_queue("state")
    redis_client.set("celery\x06\x163", "not a list")
    redis_client.lpush("state\x06\x169", b'{"left":1}')

    assert broker.adopt_celery_side_lists() == 1
    assert redis_client.lrange("state", 0, -1) == [b'{"left":1}']
    assert redis_client.get("celery\x06\x163") == b"not a list"
