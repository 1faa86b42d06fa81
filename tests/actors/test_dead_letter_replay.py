"""Dead letters put back in their queue (retries reset) or deleted, each in one Redis step."""

from __future__ import annotations

import json

import dramatiq
import pytest

from actors import dead_letters, keys
from actors.dead_letters import DeadLetterNotFound
from tests.support.waiting import wait_for


def declare(broker, name="noop", queue="default", priority=0):
    def fn(*args, **kwargs):
        return None

    return dramatiq.actor(fn, actor_name=name, queue_name=queue, priority=priority, broker=broker)


def dead_letter(broker, actor, *args, retries=3):
    """Send a message, take it in flight and dead-letter it, as the consumer does after the last retry."""
    message = actor.send(*args)
    consumer = broker.consume(actor.queue_name, prefetch=1, timeout=100)
    taken = wait_for(lambda: next(consumer))
    taken.options.update(retries=retries, error="ValueError('boom')", traceback="Traceback ...")
    assert broker.dead_letter(taken.inflight_key, taken.raw, taken.message_id, queue_name=actor.queue_name,
                              error="ValueError('boom')", tb="Traceback ...", message=taken._message.asdict())
    consumer.close()
    return message


def test_retry_moves_a_dead_letter_back_to_its_queue_list_with_retries_reset(make_broker, redis_client):
    # Given a dead-lettered message that had used its three retries
    broker = make_broker()
    actor = declare(broker, "replayed", priority=-5)
    message = dead_letter(broker, actor, "a", 1)
    assert redis_client.zcard(keys.dead_key("default")) == 1

    # When it is retried
    record = broker.retry_dead_letter("default", message.message_id)

    # Then it waits in the runbook's list again as a first attempt, and the dead set no longer has it
    assert record["error"] == "ValueError('boom')"
    (raw,) = redis_client.lrange("celery", 0, -1)
    element = json.loads(raw)
    assert element["message_id"] == message.message_id and element["args"] == ["a", 1]
    assert element["priority"] == -5
    assert "retries" not in element["options"] and "error" not in element["options"]
    assert redis_client.zcard(keys.dead_key("default")) == 0
    assert redis_client.hlen(keys.dead_messages_key("default")) == 0


def test_a_retried_dead_letter_takes_its_place_by_priority(make_broker, redis_client):
    # Given an urgent dead letter and a less urgent message waiting
    broker = make_broker()
    urgent, lazy = declare(broker, "urgent", priority=-8), declare(broker, "lazy", priority=-1)
    message = dead_letter(broker, urgent, "u")
    lazy.send("l")

    # When the urgent one is retried, it runs before the waiting one (consumers take from the tail)
    broker.retry_dead_letter("celery", message.message_id)
    assert json.loads(redis_client.lindex("celery", -1))["actor_name"] == "urgent"


def test_retrying_or_deleting_an_unknown_id_raises_and_changes_nothing(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker)
    message = dead_letter(broker, actor)
    with pytest.raises(DeadLetterNotFound):
        broker.retry_dead_letter("default", "no-such-id")
    with pytest.raises(DeadLetterNotFound):
        broker.delete_dead_letter("default", "no-such-id")
    with pytest.raises(DeadLetterNotFound):
        broker.retry_dead_letter("state", message.message_id)  # the wrong queue
    assert redis_client.zcard(keys.dead_key("default")) == 1 and redis_client.llen("celery") == 0


def test_a_dead_letter_is_retried_once_however_often_it_is_asked(make_broker, redis_client):
    broker = make_broker()
    message = dead_letter(broker, declare(broker))
    broker.retry_dead_letter("default", message.message_id)
    with pytest.raises(DeadLetterNotFound):
        broker.retry_dead_letter("default", message.message_id)
    assert redis_client.llen("celery") == 1


def test_delete_forgets_the_dead_letter(make_broker, redis_client):
    broker = make_broker()
    message = dead_letter(broker, declare(broker))
    broker.delete_dead_letter("default", message.message_id)
    assert dead_letters.records(redis_client, "default") == []
    assert redis_client.llen("celery") == 0


def test_page_lists_the_newest_dead_letters_first(make_broker, redis_client):
    broker = make_broker()
    actor = declare(broker)
    sent = [dead_letter(broker, actor, n).message_id for n in range(3)]
    total, page = dead_letters.page(redis_client, "default", offset=0, limit=2)
    assert total == 3
    assert [r["message_id"] for r in page] == [sent[2], sent[1]]


def test_dead_letters_of_the_same_millisecond_keep_their_order(make_broker, redis_client):
    # Many letters in a row share milliseconds (the set's scores are times in ms); ties
    # must not fall back to the ids' (random) order.
    broker = make_broker()
    ids = []
    for n in range(30):
        element = f'{{"priority":0,"n":{n}}}'.encode()
        redis_client.rpush("test:inflight", element)
        ids.append(f"id-{99 - n:02d}")  # ids sorting against the order of their deaths
    with redis_client.pipeline(transaction=False) as pipe:
        for n, message_id in enumerate(ids):
            broker.scripts["dead_letter"](keys=[
                "test:inflight", keys.dead_key("default"), keys.dead_messages_key("default")],
                args=[f'{{"priority":0,"n":{n}}}', message_id, json.dumps({"message_id": message_id}),
                      86_400_000], client=pipe)
        pipe.execute()
    _, page = dead_letters.page(redis_client, "default", offset=0, limit=30)
    assert [r["message_id"] for r in page] == ids[::-1]


def test_an_undecodable_dead_letter_is_retried_byte_for_byte(make_broker, redis_client):
    broker = make_broker()
    raw = b'{"priority":0,"oops":"\xff\xfe\x80 not utf-8"}'
    redis_client.rpush("test:inflight", raw)
    assert broker.dead_letter("test:inflight", raw, "bad-1", queue_name="default", error="undecodable", tb=None,
                              message=None)
    assert "\ufffd" in dead_letters.get(redis_client, "default", "bad-1")["raw"]  # readable text for the page
    broker.retry_dead_letter("default", "bad-1")
    assert redis_client.lrange("celery", 0, -1) == [raw]
