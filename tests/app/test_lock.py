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


def test_the_lock_outlives_its_holder_by_its_ttl(redis_client):
    with conversation_lock(redis_client, "c1", ttl_s=360):
        ttl_ms = redis_client.pttl(lock_key("c1"))
    assert 300_000 < ttl_ms <= 360_000


def test_a_holder_whose_lock_expired_does_not_release_the_next_holders(redis_client):
    with conversation_lock(redis_client, "c1", ttl_s=60):
        # The lock expired and another task took it
        redis_client.set(lock_key("c1"), "someone else's token")
    assert redis_client.get(lock_key("c1")) == b"someone else's token"
