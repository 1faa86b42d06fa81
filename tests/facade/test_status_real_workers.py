"""``celery status`` and ``inspect active`` with two real worker processes."""

from __future__ import annotations

import ast
import os
import signal

import pytest

from actors import keys
from tests.actors.test_worker_processes import processes, start_dramatiq  # noqa: F401  (fixture)
from tests.support import extra_actors as test_actors
from tests.support.cli import run_celery
from tests.support.node_writer_stand_in import beat_for_dramatiq_worker
from tests.support.waiting import wait_for


def _start_node(redis_client, processes, name: str, known: set[str]) -> set[str]:  # noqa: F811
    """A dramatiq worker subprocess registered as node ``name``; returns its broker ids."""
    proc = start_dramatiq({})
    processes.append(proc)
    ids = wait_for(lambda: {m.decode() for m in redis_client.zrange(keys.HEARTBEATS, 0, -1)} - known)
    beat_for_dramatiq_worker(redis_client, name, proc, ids)
    return ids


@pytest.mark.slow
def test_two_worker_nodes_show_in_status_and_their_running_tasks_in_inspect_active(
        global_broker, redis_client, processes):  # noqa: F811
    # Given two worker nodes running two tasks that wait for a gate key
    first = _start_node(redis_client, processes, "worker1@vm", set())
    _start_node(redis_client, processes, "worker2@vm", first)
    test_actors.test_gate.send("gate:one")
    test_actors.test_gate.send("gate:two")
    wait_for(lambda: redis_client.llen("test:order") == 2)

    # When the operator asks
    status = run_celery("-A", "tasks", "status")
    active = wait_for(lambda: (r := run_celery("-A", "tasks", "inspect", "active")).stdout.count("* {") == 2 and r)

    # Then both nodes are online, and the running tasks show with their arguments under their node
    assert status.returncode == 0
    assert status.stdout == "->  worker1@vm: OK\n->  worker2@vm: OK\n\n2 nodes online.\n"
    node, running = None, {}
    for line in active.stdout.splitlines():
        if line.startswith("->  "):
            node = line[4:].removesuffix(": OK")
        elif line.startswith("    * {"):
            task = ast.literal_eval(line[6:])
            assert task["hostname"] == node and task["name"] == "tasks.test_gate"
            running[task["args"][0]] = node
    assert sorted(running) == ["gate:one", "gate:two"]
    assert active.stdout.endswith("\n\n2 nodes online.\n")

    # And a node whose process died drops out (its beats stop)
    os.killpg(processes[1].pid, signal.SIGKILL)
    processes[1].wait()
    redis_client.set("gate:one", 1)
    redis_client.set("gate:two", 1)
    wait_for(lambda: run_celery("-A", "tasks", "status").stdout == "->  worker1@vm: OK\n\n1 node online.\n")
