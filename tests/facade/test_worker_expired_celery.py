"""A prefork child dies running an old deployment's Celery message whose ``expires``
has passed since it began: the node lives on and the message is retried."""

from __future__ import annotations

import base64
import json
import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actors import keys
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    """The node's pool processes (multiprocessing children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat, cmdline = (entry / "stat").read_text(), (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_child_dying_in_a_celery_task_that_expired_meanwhile_does_not_end_the_node(celery_worker, redis_client):
    worker = celery_worker("worker -l info -c 1 -Q default")
    worker.wait_ready()

    # Given an old deployment's message (Celery protocol 2) that expires 2 s from now, running
    task_id = str(uuid.uuid4())
    expires = datetime.now(UTC) + timedelta(seconds=2)
    body = base64.b64encode(json.dumps([["test:never-set", 60], {}, {}]).encode()).decode()
    redis_client.lpush(keys.queue_key("default"), json.dumps({
        "body": body, "content-type": "application/json", "content-encoding": "utf-8",
        "headers": {"lang": "py", "task": "tasks.test_gate", "id": task_id, "expires": expires.isoformat(),
                    "retries": 0},
        "properties": {"body_encoding": "base64", "delivery_info": {"routing_key": "celery"}}}))
    wait_for(lambda: redis_client.llen("test:order") == 1, 60)
    [child] = _children(worker.pid)

    # When its child dies after the expiry (killed, as out of memory or at the hard time limit)
    wait_for(lambda: datetime.now(UTC) > expires + timedelta(seconds=0.2), 10)
    os.kill(child, signal.SIGKILL)

    # Then the node fails the run by the retry policy (the supervisor read the message as expired
    # and died of it, taking every child with it), starts another child, and keeps running
    worker.wait_for_output(f"Task tasks.test_gate[{task_id}] retry: Retry in 5s: WorkerLostError", 60)
    wait_for(lambda: _children(worker.pid) not in ([], [child]), 60)
    assert worker.proc.poll() is None, worker.output()[-3000:]
    assert "UndecodableMessage" not in worker.output()
    assert redis_client.zcard(keys.delayed_key("default")) == 1
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
