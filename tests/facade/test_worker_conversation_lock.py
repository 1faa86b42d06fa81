"""The conversation lock under ``celery -A tasks worker``: real children answering real batches.

It lasts as long as the task it protects may run, whatever set that
task's limit, and it is freed as soon as its holder's process is known
dead, not when its TTL (minutes) runs out.
"""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import select

import tasks
from actors import keys
from actors.conversation_locks import lock_ttl_s
from actors.middleware.time_limits import HARD_LIMIT_GRACE_S
from app.db.models import OutboxEntry
from app.lock import lock_key
from tests.support import extra_actors as test_actors
from tests.support.conversations import inbound
from tests.support.waiting import wait_for
from tests.support.whatsapp_redis import sent

pytestmark = pytest.mark.slow

#: The children answer through the Redis-recording WhatsApp, and the first
#: model call of the test stalls (120 s) while its task holds the lock.
CONVERSATIONS = {"WORKER_EXTRA_MODULES": "tests.support.worker_app_conversations",
                 "TEST_STALL_FIRST_MODEL_CALL": "1"}

KEY = "15550007777"

#: The pids of the model calls started (``worker_app_conversations.MODEL_STARTS_KEY``;
#: importing that module would install its runtime in this process too).
MODEL_STARTS_KEY = "test:model:starts"


def _send_batch(**options):
    return tasks.process_message_task.apply_async(args=[KEY, "b1", [inbound("w1", "where is my parcel?",
                                                                             wa_id=KEY)]], **options)


@pytest.mark.parametrize("limits, options, limit_s", [
    ("--time-limit=900 --soft-time-limit=800", {}, 900),
    ("", {"time_limit": 1200, "soft_time_limit": 1100}, 1200),
], ids=["node --time-limit", "apply_async(time_limit=)"])
def test_a_task_keeps_its_conversations_lock_for_its_whole_hard_limit(limits, options, limit_s, celery_worker,
                                                                      redis_client, db, checkpoints):
    # Given a node whose tasks may run longer than the default 300 s
    worker = celery_worker(f"worker -l info -c 1 {limits} -Q default", **CONVERSATIONS)
    worker.wait_ready()

    # When a batch's task holds the conversation's lock (its model call stalls)
    _send_batch(**options)
    wait_for(lambda: redis_client.llen(MODEL_STARTS_KEY) == 1, 60)

    # Then the lock lasts past that task's hard limit and the graces before a stuck
    # task's child is killed, so it cannot expire while the task may still write
    pttl_ms = redis_client.pttl(lock_key(KEY))
    assert pttl_ms > (limit_s + 2 * HARD_LIMIT_GRACE_S) * 1000, pttl_ms
    assert pttl_ms <= lock_ttl_s(limit_s) * 1000
    # and it is recorded as the child's, for the clean-up should the child die
    token = redis_client.get(lock_key(KEY))
    records = [redis_client.hget(k, lock_key(KEY)) for k in redis_client.scan_iter(keys.held_key("*"))]
    assert records == [token]


def test_a_child_killed_holding_a_conversations_lock_frees_it_at_once(celery_worker, redis_client, db,
                                                                      checkpoints):
    # Given a batch whose task holds the conversation's lock (its model call stalls),
    # on a node with the default limits (the lock's TTL is 366 s)
    worker = celery_worker("worker -l info -c 1 -Q default", **CONVERSATIONS)
    worker.wait_ready()
    _send_batch()
    wait_for(lambda: redis_client.llen(MODEL_STARTS_KEY) == 1, 60)
    child_pid = int(redis_client.lindex(MODEL_STARTS_KEY, 0))
    assert redis_client.pttl(lock_key(KEY)) > 300_000

    # When the child is killed without a word
    os.kill(child_pid, signal.SIGKILL)

    # Then its supervisor frees the lock as it cleans up after the child, well within the TTL
    wait_for(lambda: redis_client.exists(lock_key(KEY)) == 0, 60)
    worker.wait_for_output("Freed 1 conversation lock(s) held by worker process", 30)
    # and the task's retry (5 s later, in the new child) answers the batch, once
    (reply,) = wait_for(lambda: sent(redis_client), 60)
    assert reply["to"] == KEY and reply["callback_data"] == "b1"
    assert redis_client.llen(MODEL_STARTS_KEY) == 2

    def stored() -> list[tuple[str, str | None]]:
        # (the send is recorded just before its outbox row is completed)
        with db() as session:
            return [(e.state, e.wamid) for e in session.scalars(select(OutboxEntry))]

    wait_for(lambda: stored() == [("sent", reply["wamid"])], 30)
    assert len(sent(redis_client)) == 1


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_task_stuck_past_its_hard_limit_frees_its_conversations_lock_when_its_process_is_replaced(
        pool, celery_worker, redis_client):
    # Given a task holding a conversation's lock (for 10 minutes) that blocks in C code
    worker = celery_worker(f"worker -l info -P {pool} -c 1 --time-limit=2 --soft-time-limit=1 -Q default")
    worker.wait_ready()
    test_actors.test_lock_then_block_in_c.delay(KEY)
    wait_for(lambda: redis_client.llen("test:locked") == 1, 60)
    assert redis_client.pttl(lock_key(KEY)) > 500_000

    # When its process is replaced a grace after the hard limit (solo exits 75 for its service
    # manager; prefork's supervisor kills the child)
    if pool == "solo":
        assert worker.wait(90) == 75
    else:
        worker.wait_for_output("exited with 'signal 9 (SIGKILL)'", 90)

    # Then the lock is freed with its process, not 10 minutes later
    wait_for(lambda: redis_client.exists(lock_key(KEY)) == 0, 30)
    assert list(redis_client.scan_iter(keys.held_key("*"))) == []
