"""Extra actors for tests, declared on the project's broker next to the five."""

from __future__ import annotations

import os
import socket
import time

import redis

import actors
from facade import SoftTimeLimitExceeded
from facade.api import task

# loads_domain=False: none of these needs the database, the graph or WhatsApp, so a worker running
# them does not import them first (actors.middleware.DomainLoader), and their timings stay the broker's.
_LIMITS = dict(time_limit=300, soft_time_limit=240, retry_delays=(5, 10, 20), options={"loads_domain": False})

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    """A client of the tests' Redis database (not the runtime's, which would load the domain)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(actors.config.redis_uri, socket_connect_timeout=5, socket_timeout=10)
    return _client


@task(queue="default", priority=5, name="test_gate", **_LIMITS)
def test_gate(key: str, wait_s: float = 30) -> None:
    """Blocks until ``key`` exists in Redis (``wait_s`` at most)."""
    _redis().rpush("test:order", "gate")
    deadline = time.monotonic() + wait_s
    while not _redis().exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)


@task(queue="default", priority=1, name="test_record_default", **_LIMITS)
def test_record_default(tag: str) -> None:
    _redis().rpush("test:order", tag)


@task(queue="state", priority=8, name="test_record_state", **_LIMITS)
def test_record_state(tag: str) -> None:
    _redis().rpush("test:order", tag)


@task(queue="default", priority=5, name="test_soft_limit", **_LIMITS)
def test_soft_limit() -> None:
    try:
        while True:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        _redis().rpush("test:order", "soft limit caught")


@task(queue="default", priority=5, name="test_hard_limit", **_LIMITS)
def test_hard_limit() -> None:
    _redis().rpush("test:order", "hard limit started")
    while True:
        try:
            time.sleep(0.01)
        except SoftTimeLimitExceeded:
            _redis().rpush("test:order", "ignored the soft limit")


@task(queue="default", priority=5, name="test_flaky", **_LIMITS)
def test_flaky(tag: str) -> None:
    _redis().rpush("test:runs", tag)
    raise ConnectionError("upstream down")


@task(queue="default", priority=5, name="test_fail_for_good", **_LIMITS)
def test_fail_for_good(tag: str) -> None:
    """Fails with an error that is not transient: dead-lettered at once."""
    _redis().rpush("test:runs", tag)
    raise ValueError(f"bad input {tag!r}")


@task(queue="default", priority=5, name="test_crash_once", **_LIMITS)
def test_crash_once(tag: str) -> None:
    """The first run stalls (to be killed); the run after redelivery completes."""
    client = _redis()
    client.rpush("test:started", f"{tag}:{os.getpid()}")
    if client.set(f"test:first-run:{tag}", os.getpid(), nx=True):
        time.sleep(120)
    client.rpush("test:done", tag)


def _block_in_c() -> None:
    """``recv`` on a connection whose peer never writes: the time limits' async
    exceptions cannot reach it; only replacing the process stops it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    conn = socket.create_connection(server.getsockname())
    conn.recv(1)


@task(queue="default", priority=5, name="test_blocked_in_c", **_LIMITS)
def test_blocked_in_c(tag: str) -> None:
    """Blocks in C code for good."""
    _redis().rpush("test:blocked", f"{tag}:{os.getpid()}")
    _block_in_c()
    _redis().rpush("test:blocked", f"{tag}:returned")


@task(queue="default", priority=5, name="test_lock_then_block_in_c", **_LIMITS)
def test_lock_then_block_in_c(conversation: str) -> None:
    """Takes ``conversation``'s lock as this process's, as the conversation tasks do, but
    for 10 minutes (so that only its process's clean-up frees it soon), then blocks in C code."""
    import actors
    from actors.conversation_locks import terms_for
    from app.lock import conversation_lock

    terms = terms_for(actors.broker)()
    with conversation_lock(_redis(), conversation, ttl_s=600, held_in=terms.held_in):
        _redis().rpush("test:locked", f"{conversation}:{os.getpid()}")
        _block_in_c()


@task(queue="default", priority=5, name="test_kill_own_process", **_LIMITS)
def test_kill_own_process(tag: str) -> None:
    """Ends its process without a word, as an out-of-memory kill would."""
    _redis().rpush("test:killed", f"{tag}:{os.getpid()}")
    os._exit(9)


@task(queue="default", priority=5, name="test_enqueue_during_a_redis_blip", **_LIMITS)
def test_enqueue_during_a_redis_blip(tag: str) -> None:
    """Sends a follow-up through a broker whose Redis cannot be reached,
    as a task does when Redis blips after its work began."""
    from dramatiq import Message

    from actors.broker import RedisBroker

    _redis().rpush("test:runs", tag)
    unreachable = RedisBroker(url="redis://127.0.0.1:1/0", middleware=[])
    try:
        unreachable.declare_queue("default")
        unreachable.enqueue(Message(queue_name="default", actor_name="test_record_default", args=(tag,),
                                    kwargs={}, options={}))
    finally:
        unreachable.client.close()


@task(queue="default", priority=5, name="test_hold_gil", **_LIMITS)
def test_hold_gil(tag: str, seconds: int) -> None:
    """Holds the GIL for ``seconds``: a C call through ``PyDLL`` does not release it,
    so no other thread of the process (its upkeep thread) runs meanwhile."""
    import ctypes

    _redis().rpush("test:gil-started", f"{tag}:{os.getpid()}")
    ctypes.PyDLL(None).sleep(seconds)
    _redis().rpush("test:gil-done", tag)


@task(queue="default", priority=5, name="test_fail_unless", **_LIMITS)
def test_fail_unless(tag: str, key: str) -> None:
    """Fails at once (not a transient error: straight to the dead letters) unless ``key`` exists."""
    _redis().rpush("test:runs", tag)
    if not _redis().exists(key):
        raise ValueError(f"{key} is not set")
    _redis().rpush("test:done", tag)
