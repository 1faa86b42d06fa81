"""The per-conversation lock: one holder, released only by it."""

from __future__ import annotations

import pytest

from app.lock import ConversationBusy, conversation_lock, lock_key


def test_a_held_lock_refuses_a_second_holder_until_released(redis_client):
    with conversation_lock(redis_client, "c1", ttl_s=60):
        with pytest.raises(ConversationBusy):
            with conversation_lock(redis_client, "c1", ttl_s=60):
                pass
        # Another conversation is not affected
        with conversation_lock(redis_client, "c2", ttl_s=60):
            pass
    with conversation_lock(redis_client, "c1", ttl_s=60):
        pass


def test_the_lock_lives_for_its_ttl(redis_client):
    with conversation_lock(redis_client, "c1", ttl_s=360):
        ttl_ms = redis_client.pttl(lock_key("c1"))
    assert 300_000 < ttl_ms <= 360_000


def test_a_holder_whose_lock_expired_does_not_release_the_next_holders(redis_client):
    with conversation_lock(redis_client, "c1", ttl_s=60):
        # The lock expired and another task took it
        redis_client.set(lock_key("c1"), "someone else's token")
    assert redis_client.get(lock_key("c1")) == b"someone else's token"


def test_a_lock_taken_for_a_process_is_recorded_with_its_token_and_the_record_goes_with_it(redis_client):
    held = "dramatiq:held.p1"
    with conversation_lock(redis_client, "c1", ttl_s=60, held_in=held) as token:
        # Recorded in the same step as taken, for the cleanup after a dead process
        assert redis_client.hgetall(held) == {lock_key("c1").encode(): token.encode()}
        # and the record outlives the lock, so the cleanup always finds it
        assert redis_client.pttl(held) >= redis_client.pttl(lock_key("c1")) > 0
    assert redis_client.exists(lock_key("c1")) == 0
    assert redis_client.hgetall(held) == {}


def test_a_refused_lock_is_not_recorded(redis_client):
    held = "dramatiq:held.p2"
    with conversation_lock(redis_client, "c1", ttl_s=60, held_in="dramatiq:held.p1"):
        with pytest.raises(ConversationBusy):
            with conversation_lock(redis_client, "c1", ttl_s=60, held_in=held):
                pass
    assert redis_client.exists(held) == 0


def test_a_holder_whose_lock_was_freed_and_taken_again_leaves_the_new_record_alone(redis_client):
    with conversation_lock(redis_client, "c1", ttl_s=60, held_in="dramatiq:held.p1"):
        # Its process was found dead: the lock was freed, and another process took it
        redis_client.delete(lock_key("c1"), "dramatiq:held.p1")
        redis_client.set(lock_key("c1"), "p2's token")
        redis_client.hset("dramatiq:held.p1", lock_key("c1"), "p1's newer token")
    assert redis_client.get(lock_key("c1")) == b"p2's token"
    assert redis_client.hget("dramatiq:held.p1", lock_key("c1")) == b"p1's newer token"
