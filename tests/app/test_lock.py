"""The per-conversation lock: one holder, released only by it."""

from __future__ import annotations

import pytest
import redis

from app.lock import ConversationBusy, conversation_lock, lock_key, release_unreleased
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import wait_for


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


@pytest.fixture
def restartable_redis(tmp_path):
    """A private redis-server that keeps its data across a crash, and a client of it."""
    server = PrivateRedis(tmp_path, password="pw")
    client = redis.Redis.from_url(server.url, socket_connect_timeout=2)
    # (the unreleased locks are the process's: what an earlier test left must not count here)
    release_unreleased()
    yield server, client
    client.close()
    if server.proc.poll() is None:
        server.stop()


def test_a_release_that_cannot_reach_redis_is_done_once_redis_answers_again(restartable_redis):
    server, client = restartable_redis
    # Given a holder whose block ends while Redis is down (its outcome stands: no error from the release)
    with conversation_lock(client, "c1", ttl_s=300, held_in="dramatiq:held.p1"):
        server.kill()
    # When Redis comes back, with the lock still taken (it has minutes to live)
    server.start()
    assert client.exists(lock_key("c1")) == 1
    # Then the process releases it at the next chance, record included
    assert release_unreleased() == 1
    assert client.exists(lock_key("c1"), "dramatiq:held.p1") == 0
    assert release_unreleased() == 0


def test_the_next_take_in_the_process_first_releases_what_an_outage_left_taken(restartable_redis):
    server, client = restartable_redis
    with conversation_lock(client, "c1", ttl_s=300):
        server.kill()
    server.start()
    # (the retry of the task that held it, for example: not "busy" for the lock's whole TTL)
    with conversation_lock(client, "c1", ttl_s=300):
        pass
    assert client.exists(lock_key("c1")) == 0


class FlakyRedis:
    """A client whose every call fails as ``failure`` says (None: answers 0, "no such lock").
    A pure unit stand-in: the real-Redis tests above cover what Redis does with a release."""

    def __init__(self, failure: type[redis.RedisError] | None) -> None:
        self.failure = failure
        self.calls = 0

    def eval(self, *_args):
        self.calls += 1
        if self.failure is not None:
            raise self.failure("Redis is not answering")
        return 0


@pytest.fixture
def flaky():
    clients: list[FlakyRedis] = []

    def make(failure: type[redis.RedisError] | None) -> FlakyRedis:
        clients.append(FlakyRedis(failure))
        return clients[-1]

    yield make
    # (what a test left unreleased goes now: the list is the process's)
    for client in clients:
        client.failure = None
    release_unreleased()


def _fail_to_take(client, conversation: str, ttl_s: float) -> None:
    with pytest.raises(redis.RedisError):
        with conversation_lock(client, conversation, ttl_s=ttl_s):
            pass


def test_a_redis_that_hangs_costs_a_release_round_one_timeout_not_one_per_lock(flaky):
    # Given three takes whose answer a hanging Redis never gave (each may have taken its lock)
    client = flaky(None)
    for conversation in ("c1", "c2", "c3"):
        client.failure = redis.TimeoutError
        _fail_to_take(client, conversation, ttl_s=300)
    # When the next round of releases runs while Redis still hangs
    client.calls = 0
    assert release_unreleased() == 0
    # Then it gave up at the first timeout (each costs the client's socket timeout, and the
    # worker's upkeep thread, which beats for the process, runs these rounds)
    assert client.calls == 1
    # and once Redis answers, all three are released
    client.failure = None
    assert release_unreleased() == 3
    assert release_unreleased() == 0


def test_a_lock_past_its_ttl_is_forgotten_rather_than_retried_for_ever(flaky):
    # Given a take lost in a Redis failure that does not go away (its lock, if taken, expires in 0.2 s)
    client = flaky(redis.ConnectionError)
    _fail_to_take(client, "c1", ttl_s=0.2)
    client.calls = 0
    release_unreleased()
    assert client.calls == 1

    # Then, once the lock would have expired, no round tries it again (nor keeps it in memory)
    def forgotten() -> bool:
        before = client.calls
        release_unreleased()
        return client.calls == before

    wait_for(forgotten, timeout_s=10, interval_s=0.05)
