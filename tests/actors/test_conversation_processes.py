"""The conversation pipeline in real worker processes under the ``dramatiq`` CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

import tasks
from app.buffer import append_to_buffer
from app.db import Message
from app.db.models import OutboxEntry
from app.lock import lock_key
from tests.support.conversations import inbound
from tests.support.processes import stop
from tests.support.waiting import wait_for
from tests.support.whatsapp_redis import sent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workers():
    started: list[subprocess.Popen] = []

    def start(processes: int = 2, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "tests.support.worker_app_conversations", "--processes",
             str(processes), "--threads", "2"],
            cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop(proc, 30)


@pytest.mark.slow
def test_buffered_messages_become_one_reply_in_worker_processes(global_broker, redis_client, db, checkpoints,
                                                                workers):
    # Given two worker processes, and three messages of one customer in the buffer
    workers()
    key = "15550009999"
    seq = 0
    for wamid, text in (("w1", "hi"), ("w2", "I ordered a lamp"), ("w3", "when does it arrive?")):
        seq = append_to_buffer(redis_client, key, wamid, inbound(wamid, text, wa_id=key))

    # When the buffer check runs (twice, as a redelivery would)
    tasks.check_buffer_task.delay(key, seq)
    tasks.check_buffer_task.delay(key, seq)

    # Then the processes answer once, to the customer's number, all three in one model call
    (reply,) = wait_for(lambda: sent(redis_client), timeout_s=60)
    global_broker.join("default", timeout=60_000)
    assert len(sent(redis_client)) == 1
    assert reply["to"] == key
    # (the offline model echoes the customer's merged turn, whitespace collapsed)
    assert "hi I ordered a lamp when does it arrive?" in reply["text"]
    with db() as session:
        assert session.scalars(select(Message.wamid).where(Message.author == "customer")
                               .order_by(Message.id)).all() == ["w1", "w2", "w3"]
        (entry,) = session.scalars(select(OutboxEntry)).all()
        assert (entry.state, entry.wamid) == ("sent", reply["wamid"])
    assert global_broker.dead_letters("default") == []


@pytest.mark.slow
def test_a_worker_killed_during_the_model_call_loses_nothing_and_replies_once(global_broker, redis_client, db,
                                                                               checkpoints, workers):
    from tests.support.worker_app_conversations import MODEL_STARTS_KEY

    # Given short limits (the conversation lock's TTL is 8 + 2 x 3 + 5 = 19 s) and a short heartbeat timeout
    env = {"TEST_STALL_FIRST_MODEL_CALL": "1", "HEARTBEAT_TIMEOUT_SECONDS": "3", "TASK_TIME_LIMIT_SECONDS": "8",
           "TASK_SOFT_TIME_LIMIT_SECONDS": "6"}
    key = "15550008888"
    first = workers(1, **env)
    tasks.process_message_task.delay(key, "b1", [inbound("w1", "where is my parcel?", wa_id=key)])
    wait_for(lambda: redis_client.llen(MODEL_STARTS_KEY) == 1, timeout_s=60)
    assert 8_000 < redis_client.pttl(lock_key(key)) <= 19_000

    # When the worker dies in the middle of the model call, holding the conversation's lock
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    workers(1, **env)

    # Then another worker's sweep gives the message back; the plain dramatiq CLI has no
    # supervisor to see the death, so the lock is left to its TTL (silent is not dead), and
    # the message is answered, once, after it
    (reply,) = wait_for(lambda: sent(redis_client), timeout_s=60)
    global_broker.join("default", timeout=60_000)
    assert reply["to"] == key and reply["callback_data"] == "b1"
    assert len(sent(redis_client)) == 1
    assert redis_client.llen(MODEL_STARTS_KEY) == 2
    with db() as session:
        (entry,) = session.scalars(select(OutboxEntry)).all()
        assert (entry.state, entry.wamid) == ("sent", reply["wamid"])
    assert global_broker.dead_letters("default") == []
