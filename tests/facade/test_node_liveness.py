"""A node's life as others see it: its pidfile, its registry entry and its ``ready.`` line.

Real ``celery`` worker processes on the run's Redis.  Each wait ends as soon
as its condition holds; the bounds are generous, except where the bound is
the promise itself (a node gone within ``MISSED_BEATS`` beats).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from actors import keys, registry
from tests.support import extra_actors as test_actors
from tests.support.cli import run_celery
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

#: Slack on top of MISSED_BEATS intervals for the test's own polling on a loaded machine.
SLACK_S = 10.0


def _order(redis_client) -> list[str]:
    return [v.decode() for v in redis_client.lrange("test:order", 0, -1)]


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which nobody may have reaped yet, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _redis_ms(redis_client) -> int:
    seconds, micros = redis_client.time()
    return seconds * 1000 + micros // 1000


def _beat_ms(redis_client, node: str, pid: int) -> int:
    """When process ``pid`` of ``node`` last wrote its state (0: never, or forgotten)."""
    raw = redis_client.hget(registry.node_key(node), f"proc:{pid}")
    return 0 if raw is None else int(json.loads(raw)["beat_ms"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_cold_shutdown_of_a_solo_worker_leaves_no_pidfile(signum, celery_worker, redis_client, tmp_path):
    # Given a solo node holding its pidfile, in a task that never ends on its own
    path = tmp_path / "solo.pid"
    worker = celery_worker(["worker", "-l", "info", "-P", "solo", "--time-limit=60", "--soft-time-limit=50",
                            "-Q", "default", "--pidfile", str(path)])
    worker.wait_ready()
    assert path.read_text() == f"{worker.pid}\n"
    test_actors.test_gate.delay("test:never")
    wait_for(lambda: _order(redis_client) == ["gate"], 60)

    # When a second signal turns its warm shutdown into a cold one (the process leaves with os._exit)
    worker.signal(signum)
    worker.wait_for_output("worker: Warm shutdown (MainProcess)", 30)
    worker.signal(signum)

    # Then it leaves as before, in Celery's words, and its pidfile goes with it
    assert worker.wait() == 1
    assert "worker: Cold shutdown (MainProcess)" in worker.output()
    assert not path.exists()


def test_a_pidfile_naming_a_dead_process_is_taken_over(celery_worker, tmp_path):
    # Given the pidfile of a node that died without removing it (its pid names nothing now)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    path = tmp_path / "restarted.pid"
    path.write_text(f"{ended.pid}\n")

    # When the node starts again (as its service manager does)
    worker = celery_worker(["worker", "-l", "info", "-P", "solo", "-Q", "default", "--pidfile", str(path)],
                           split_stderr=True)

    # Then it says so in Celery's words, takes the file over and serves
    worker.wait_ready()
    assert path.read_text() == f"{worker.pid}\n"
    assert "Stale pidfile exists - Removing it.\n" in worker.stderr()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert not path.exists()


def test_a_prefork_node_whose_supervisor_is_killed_is_gone_within_three_beats_and_its_children_stop(
        celery_worker, redis_client):
    # Given a prefork node of two children, one of them in a long task
    host = socket.gethostname()
    worker = celery_worker("worker -l info -P prefork -c 2 --prefetch-multiplier=1 -Q default -n orphans@%h")
    worker.wait_ready()
    wait_for(lambda: [len(n.processes) for n in registry.live_nodes(redis_client)] == [2], 120)
    sent = test_actors.test_gate.delay("gate:orphan", 300)
    busy = wait_for(lambda: [t["worker_pid"] for n in registry.live_nodes(redis_client) for t in n.active], 60)
    [children] = [{int(pid) for pid in n.processes} for n in registry.live_nodes(redis_client)]
    [idle] = children - set(busy)
    [busy_pid] = busy
    try:
        # When its supervisor is killed outright
        os.kill(worker.pid, signal.SIGKILL)
        worker.proc.wait()

        # Then the node is gone within three beats, while the orphaned child still runs its task
        wait_for(lambda: registry.live_nodes(redis_client) == [],
                 registry.MISSED_BEATS * registry.INTERVAL_S + SLACK_S, 0.1)
        gone_ms = _redis_ms(redis_client)
        assert _running(busy_pid) and not redis_client.exists("gate:orphan")
        # and stays gone though that child keeps beating its own state
        wait_for(lambda: _beat_ms(redis_client, f"orphans@{host}", busy_pid) > gone_ms, 30, 0.1)
        status = run_celery("-A", "tasks", "status")
        assert (status.returncode, status.stderr) == (69, "Error: No nodes replied within time constraint\n")
        assert registry.live_nodes(redis_client) == []

        # And the orphans stop: the idle one at once, the busy one after its task
        wait_for(lambda: not _running(idle), 60)
        assert _running(busy_pid)
        redis_client.set("gate:orphan", 1)
        wait_for(lambda: f"Task tasks.test_gate[{sent.id}] succeeded in " in worker.output(), 60)
        wait_for(lambda: not _running(busy_pid), 60)
        assert worker.output().count("The supervisor is gone: taking no new task, stopping after the running one.") \
            == 2
        # its message was acknowledged, not left in flight
        assert all(redis_client.llen(k) == 0 for k in redis_client.scan_iter(keys.inflight_key("default", "*")))
        assert redis_client.llen("celery") == 0
    finally:
        for pid in (idle, busy_pid):
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_prefork_node_is_ready_once_one_child_serves_while_another_fails_to_start(celery_worker, redis_client):
    # Given a prefork node whose first child takes 20 s to fail at start (never ready meanwhile)
    # and whose second child, and the first one's replacement, start normally
    node = f"celery@{socket.gethostname()}"
    worker = celery_worker("worker -l info -c 2 -Q default",
                           WORKER_EXTRA_MODULES="tests.support.extra_actors,tests.support.crashing_child",
                           TEST_SPARED_CHILDREN="2,3", TEST_CHILD_DIES_AFTER_S="20")

    # Then it says it is ready as soon as the second child serves, before the first one failed
    output = worker.wait_for_output(f"{node} ready.")
    assert "exited with" not in output
    # and the registry counts it from then on
    status = run_celery("-A", "tasks", "status")
    assert (status.returncode, status.stdout) == (0, f"->  {node}: OK\n\n1 node online.\n")
    test_actors.test_record_default.delay("served")
    wait_for(lambda: _order(redis_client) == ["served"], 60)

    # When the first child fails and its replacement becomes ready
    worker.wait_for_output("Process 'ForkPoolWorker-1' pid:", 120)
    assert re.search(r"Process 'ForkPoolWorker-1' pid:\d+ exited with 'exitcode 3'", worker.output())
    wait_for(lambda: {p.get("index") for n in registry.live_nodes(redis_client) for p in n.processes.values()}
             == {2, 3}, 120)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0

    # Then the line was said once only
    assert worker.output().count(f"{node} ready.") == 1, worker.output()
