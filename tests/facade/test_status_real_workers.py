"""``celery status`` and ``inspect active`` with two real worker nodes."""

from __future__ import annotations

import ast
import os
import signal
import socket

import pytest

from tests.support import extra_actors as test_actors
from tests.support.cli import run_celery
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def _running(stdout: str) -> dict[str, str]:
    """gate key -> node, from ``inspect active``'s output."""
    node, running = None, {}
    for line in stdout.splitlines():
        if line.startswith("->  "):
            node = line[4:].removesuffix(": OK")
        elif line.startswith("    * {"):
            task = ast.literal_eval(line[6:])
            assert task["hostname"] == node and task["name"] == "tasks.test_gate"
            # the actor's priority on the runbook's scale, as the message carries none
            assert task["delivery_info"]["priority"] == 5
            running[task["args"][0]] = node
    return running


def test_two_worker_nodes_show_in_status_and_their_running_tasks_in_inspect_active(celery_worker, redis_client):
    # Given the runbook's two named nodes, each running a task that waits for a gate key
    # (one message each: a prefetched second gate would sit reserved on the first node)
    host = socket.gethostname()
    first = celery_worker("worker -l info -P solo --prefetch-multiplier=1 -Q default,state -n worker1@%h")
    second = celery_worker("worker -l info -P solo --prefetch-multiplier=1 -Q default,state -n worker2@%h")
    first.wait_ready()
    second.wait_ready()
    test_actors.test_gate.send("gate:one")
    test_actors.test_gate.send("gate:two")
    wait_for(lambda: redis_client.llen("test:order") == 2)

    # When the operator asks
    status = wait_for(lambda: (r := run_celery("-A", "tasks", "status")).stdout.endswith("2 nodes online.\n") and r)
    active = wait_for(lambda: (r := run_celery("-A", "tasks", "inspect", "active")).stdout.count("* {") == 2 and r)

    # Then both nodes are online, and each running task shows under the node that runs it
    assert status.returncode == 0
    assert status.stdout == f"->  worker1@{host}: OK\n->  worker2@{host}: OK\n\n2 nodes online.\n"
    running = _running(active.stdout)
    assert sorted(running) == ["gate:one", "gate:two"]
    assert set(running.values()) == {f"worker1@{host}", f"worker2@{host}"}
    assert active.stdout.endswith("\n\n2 nodes online.\n")

    # And a node killed outright drops out once its beats stop
    os.killpg(second.pid, signal.SIGKILL)
    second.proc.wait()
    redis_client.set("gate:one", 1)
    redis_client.set("gate:two", 1)
    wait_for(lambda: run_celery("-A", "tasks", "status").stdout == f"->  worker1@{host}: OK\n\n1 node online.\n")


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_inspect_stats_shows_the_nodes_own_rusage(celery_worker, pool):
    import json

    from actors.middleware.node_state import RUSAGE_FIELDS

    worker = celery_worker(f"worker -l info -P {pool} -c 1 -n stats@%h")
    worker.wait_ready()

    def stats():
        result = run_celery("-A", "tasks", "inspect", "stats", "--json")
        replies = json.loads(result.stdout.splitlines()[0]) if result.returncode == 0 else {}
        return next(iter(replies.values()), None)

    reply = wait_for(lambda: (s := stats()) and s["rusage"] and s)
    # getrusage of the process that beats for the node (the supervisor under prefork), Celery's keys
    assert list(reply["rusage"]) == list(RUSAGE_FIELDS)
    assert reply["rusage"]["utime"] > 0 and reply["rusage"]["maxrss"] > 0
    assert reply["pid"] == worker.pid
