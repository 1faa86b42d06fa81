"""Conversation locks held by worker processes: as long as the running task may run,
and freed as soon as their process is known to be gone (reaped by its supervisor, or leaving)."""

from __future__ import annotations

import contextlib

import pytest
from dramatiq.middleware import CurrentMessage

from actors import conversation_locks, keys
from actors.middleware import TimeLimits
from app.lock import ConversationBusy, conversation_lock, lock_key
from tests.support.waiting import wait_for


@pytest.fixture
def hold(redis_client):
    """``hold(broker, conversation)`` takes the lock as a task of ``broker``'s process does,
    and does not release it during the test (its holder "dies" holding it)."""
    with contextlib.ExitStack() as stack:
        def take(broker, conversation: str) -> None:
            stack.enter_context(conversation_lock(redis_client, conversation, ttl_s=600,
                                                  held_in=keys.held_key(broker.broker_id)))

        yield take


def _is_free(redis_client, conversation: str) -> bool:
    try:
        with conversation_lock(redis_client, conversation, ttl_s=60):
            return True
    except ConversationBusy:
        return False


def test_a_dead_processs_locks_are_freed_with_its_messages_and_no_one_elses(make_broker, redis_client, hold):
    # Given a process holding two conversations' locks, one of which expired and
    # was taken by another process since, and another process holding a third
    dead, other = make_broker(), make_broker()
    dead.heartbeat()
    other.heartbeat()
    hold(dead, "c1")
    hold(dead, "c2")
    redis_client.delete(lock_key("c2"))
    hold(other, "c2")
    hold(other, "c3")

    # When its supervisor sees it die and gives back what it held
    dead.release_process(dead.broker_id)

    # Then its lock is free at once, and the other process's locks are untouched
    assert _is_free(redis_client, "c1")
    assert not _is_free(redis_client, "c2")
    assert not _is_free(redis_client, "c3")
    assert redis_client.exists(keys.held_key(dead.broker_id)) == 0


def test_the_sweep_gives_back_a_silent_processs_messages_but_keeps_its_locks(make_broker, redis_client, hold):
    # Given a process holding a lock, whose heartbeat stops (dead, or alive but silent:
    # a task holding the GIL, a host cut off from Redis)
    silent = make_broker(heartbeat_timeout_ms=1500)
    silent.heartbeat()
    hold(silent, "c1")
    live = make_broker(heartbeat_timeout_ms=1500)
    live.heartbeat()

    # When a live process sweeps after the silence
    def swept() -> bool:
        live.heartbeat()
        return live.sweep()[0] == 1

    wait_for(swept, timeout_s=10, interval_s=0.1)

    # Then the lock stays until it expires: a redelivered run must not write the
    # conversation while a silent holder may still be writing it
    assert not _is_free(redis_client, "c1")
    assert redis_client.hget(keys.held_key(silent.broker_id), lock_key("c1")) is not None


def test_a_process_that_leaves_frees_the_lock_of_a_task_it_could_not_stop(make_broker, redis_client, hold):
    # Given a process that consumed (so it heartbeats) and whose stuck task holds a lock
    broker = make_broker()
    broker.declare_queue("default")
    consumer = broker.consume("default", prefetch=1, timeout=100)
    hold(broker, "c1")

    # When it leaves to be replaced (-P solo/threads exit 75 after a stuck task)
    consumer.close()
    broker.close()

    # Then the conversation is free at once
    assert _is_free(redis_client, "c1")
    assert redis_client.zcard(keys.HEARTBEATS) == 0


def _terms_while_running(broker, message):
    current = CurrentMessage()
    current.before_process_message(broker, message)
    try:
        return conversation_locks.terms_for(broker)()
    finally:
        current.after_process_message(broker, message)


@pytest.mark.parametrize("node_limit_ms, message_limit_ms, effective_s", [
    (None, None, 300),           # the actors' own limit
    (900_000, None, 900),        # celery worker --time-limit=900
    (900_000, 1_500_000, 1500),  # apply_async(time_limit=1500) wins, as in Celery
    (None, 20_000, 20),
])
def test_a_tasks_lock_outlasts_its_effective_hard_limit_whatever_set_it(global_broker, monkeypatch, node_limit_ms,
                                                                         message_limit_ms, effective_s):
    import tasks

    time_limits = next(m for m in global_broker.middleware if isinstance(m, TimeLimits))
    monkeypatch.setattr(time_limits, "override_time_limit_ms", node_limit_ms)
    options = {} if message_limit_ms is None else {"time_limit": message_limit_ms}
    message = tasks.process_message_task.message_with_options(args=("c1", "b1", []), **options)

    terms = _terms_while_running(global_broker, message)

    # It lasts past the limit and the graces after which a stuck task's process is replaced
    assert terms.ttl_s >= effective_s + 2 * time_limits.grace_s + 5
    assert terms.ttl_s == conversation_locks.lock_ttl_s(effective_s, time_limits.grace_s)
    # and it is recorded as this process's
    assert terms.held_in == keys.held_key(global_broker.broker_id)


def test_the_lock_ttl_covers_the_limit_and_the_graces_with_a_bounded_margin():
    assert conversation_locks.lock_ttl_s(300, 3) == 366
    assert conversation_locks.lock_ttl_s(900, 3) == 966
    assert conversation_locks.lock_ttl_s(8, 3) == 19
    assert all(conversation_locks.lock_ttl_s(limit, 3) > limit + 6 for limit in (0.5, 5, 60, 300, 3600))
