"""Real worker processes under the plain ``dramatiq`` CLI, killed for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors import keys, registry
from tests.support import extra_actors as test_actors
from tests.support.processes import stop
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def start_dramatiq(env_overrides: dict[str, str], processes: int = 1, log=None) -> subprocess.Popen:
    env = {**os.environ, **env_overrides}
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "tests.support.worker_app", "--processes", str(processes),
         "--threads", "2"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if log is None else log,
    )



@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        stop(proc, 15)


@pytest.mark.slow
def test_a_kill_9_workers_message_is_processed_by_another_worker(global_broker, redis_client, processes):
    timeout_s = 3.0
    env = {"HEARTBEAT_TIMEOUT_SECONDS": str(timeout_s)}
    # Given a worker process in the middle of a task, and another one idle
    first = start_dramatiq(env)
    processes.append(first)
    sent = test_actors.test_crash_once.send("k1")
    wait_for(lambda: redis_client.llen("test:started") == 1)
    assert redis_client.llen("celery") == 0
    second = start_dramatiq(env)
    processes.append(second)
    wait_for(lambda: redis_client.zcard(keys.HEARTBEATS) == 2)

    # When the busy one is killed without a word
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()

    # Then the other one runs the message within the heartbeat timeout, once
    wait_for(lambda: redis_client.lrange("test:done", 0, -1) == [b"k1"])
    assert time.monotonic() - killed_at < timeout_s
    assert redis_client.llen("test:started") == 2
    time.sleep(0.5)
    assert redis_client.lrange("test:done", 0, -1) == [b"k1"]
    for key in redis_client.scan_iter(keys.inflight_key("default", "*")):
        assert redis_client.llen(key) == 0
    assert sent.message_id


@pytest.mark.slow
def test_the_plain_dramatiq_cli_runs_the_five_actors(global_broker, redis_client, processes, db):
    import tasks

    proc = start_dramatiq({})
    processes.append(proc)
    tasks.update_langgraph_state_task.delay("cli-1", "takeover")
    tasks.update_message_status_task.delay({"id": "wamid.cli", "status": "sent", "timestamp": "1"})
    wait_for(lambda: redis_client.llen("celery") == 0 and redis_client.llen("state") == 0)
    global_broker.join("default", timeout=20_000)
    global_broker.join("state", timeout=20_000)
    assert global_broker.dead_letters("default") == []
    assert global_broker.dead_letters("state") == []
    # A clean stop (SIGTERM to the main process, as systemd's KillMode=mixed
    # does; Dramatiq's children take a second SIGTERM as "kill now")
    # leaves no heartbeat behind.
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(20)
    assert redis_client.zcard(keys.HEARTBEATS) == 0


@pytest.mark.slow
def test_one_plain_dramatiq_invocation_is_one_node_in_the_registry(global_broker, redis_client, processes):
    # Given one dramatiq command with two worker processes
    proc = start_dramatiq({}, processes=2)
    processes.append(proc)

    # Then the registry shows one node, named after the main process, with both processes
    nodes = wait_for(lambda: (lambda found: found if found and len(found[0].processes) == 2 else None)(
        registry.live_nodes(redis_client)), 60)
    assert len(nodes) == 1
    node = nodes[0]
    assert node.name.startswith(f"dramatiq.{proc.pid}@")
    assert node.info["pid"] == proc.pid

    # And a running task shows in it
    sent = test_actors.test_gate.send("test:release-gate")
    wait_for(lambda: [t["id"] for n in registry.live_nodes(redis_client) for t in n.active] == [sent.message_id])
    redis_client.set("test:release-gate", 1)

    # When it stops cleanly, the node leaves at once
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(30)
    assert registry.live_nodes(redis_client) == []


@pytest.mark.slow
def test_under_the_plain_dramatiq_cli_a_task_blocked_in_c_is_only_logged(global_broker, redis_client, processes,
                                                                        tmp_path):
    # Given the plain CLI: no supervisor to replace its process
    log_path = tmp_path / "dramatiq.log"
    with open(log_path, "wb") as log:
        proc = start_dramatiq({}, log=log)
    processes.append(proc)

    # When a task blocks in C code past its hard limit
    sent = test_actors.test_blocked_in_c.apply_async(args=["plain"], time_limit=1, soft_time_limit=0.5)

    # Then the limit fires but cannot stop it: the process says so, and the
    # message stays in flight (neither retried nor given back) while it lives
    wait_for(lambda: "is still blocked 3s after its hard time limit" in log_path.read_text(), 60)
    text = log_path.read_text()
    assert f"Hard time limit (1s) exceeded for tasks.test_blocked_in_c[{sent.id}]" in text
    assert redis_client.llen("celery") == 0
    assert redis_client.zcard(keys.delayed_key("default")) == 0
    held = [m for k in redis_client.scan_iter(keys.inflight_key("default", "*")) for m in redis_client.lrange(k, 0, -1)]
    assert len(held) == 1 and sent.id.encode() in held[0]
    # (the task never returned: it would have recorded "plain:returned")
    assert redis_client.llen("test:blocked") == 1
