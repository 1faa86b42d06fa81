"""``celery status`` and ``celery inspect``: Celery's output, read from the node registry."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.support.cli import run_celery
from tests.support.redis_server import free_port

TASK = {"id": "7b1c", "name": "tasks.check_buffer_task", "args": ["15551234567", 4], "kwargs": {},
        "type": "tasks.check_buffer_task", "hostname": "worker1@vm", "time_start": 1795478807.69,
        "acknowledged": True,
        "delivery_info": {"exchange": "", "routing_key": "celery", "priority": 3, "redelivered": False},
        "worker_pid": 101}

INFO = {"name": "worker1@vm", "hostname": "vm", "pid": 100, "pool": "prefork", "concurrency": 2,
        "queues": ["default", "state"], "started_at": 1795478000.0, "sw_ident": "facade", "sw_ver": "0.1.0",
        "max_tasks_per_child": 3, "max_memory_per_child": None, "time_limit": 300.0, "soft_time_limit": 240.0,
        "prefetch_count": 8, "broker": "redis://:**@127.0.0.1:6379/5"}


@pytest.fixture
def two_nodes(beating):
    beating("worker1@vm", info=INFO, processes={
        101: {"active": [TASK], "reserved": [], "processed": 5, "by_task": {"tasks.check_buffer_task": 4}},
        102: {"active": [], "reserved": [], "processed": 2,
              "by_task": {"tasks.check_buffer_task": 1, "tasks.process_message_task": 1}},
    })
    beating("worker2@vm", info={**INFO, "name": "worker2@vm", "pid": 200, "pool": "solo", "concurrency": 1,
                                "queues": ["state"]},
            processes={200: {"active": [], "reserved": []}})


def test_status_lists_each_node_then_the_count(two_nodes):
    result = run_celery("-A", "tasks", "status")

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "->  worker1@vm: OK\n->  worker2@vm: OK\n\n2 nodes online.\n"


def test_status_with_one_node_says_node_in_the_singular(beating):
    beating("solo1@vm", info=INFO, processes={1: {}})

    assert run_celery("-A", "tasks", "status").stdout == "->  solo1@vm: OK\n\n1 node online.\n"


def test_status_without_nodes_fails_as_celery_does(redis_client):
    result = run_celery("-A", "tasks", "status", "--timeout", "0.3")

    assert result.returncode == 69
    assert result.stdout == ""
    assert result.stderr == "Error: No nodes replied within time constraint\n"


def test_status_without_redis_says_the_broker_is_unreachable():
    result = run_celery("-A", "tasks", "-b", f"redis://127.0.0.1:{free_port()}/0", "status")

    assert result.returncode == 69
    assert result.stderr.startswith("Error: Could not connect to the message broker. ")
    assert result.stderr.count("\n") == 1


def test_status_json_prints_the_replies_then_the_count(two_nodes):
    result = run_celery("-A", "tasks", "status", "--json")

    first, rest = result.stdout.split("\n", 1)
    assert json.loads(first) == {"worker1@vm": {"ok": "pong"}, "worker2@vm": {"ok": "pong"}}
    assert rest == "\n2 nodes online.\n"


def test_destination_limits_the_answer_to_the_named_nodes(two_nodes):
    result = run_celery("-A", "tasks", "status", "-d", "worker2@vm,ghost@vm", "-t", "0.2")

    assert result.stdout == "->  worker2@vm: OK\n\n1 node online.\n"


def test_inspect_ping_answers_pong_indented_by_eight(two_nodes):
    result = run_celery("-A", "tasks", "inspect", "ping")

    assert result.returncode == 0
    assert result.stdout == "->  worker1@vm: OK\n        pong\n->  worker2@vm: OK\n        pong\n\n2 nodes online.\n"


def test_inspect_active_prints_celerys_task_dicts_or_empty(two_nodes):
    result = run_celery("-A", "tasks", "inspect", "active")

    assert result.stdout == (
        "->  worker1@vm: OK\n"
        "    * {'id': '7b1c', 'name': 'tasks.check_buffer_task', 'args': ['15551234567', 4], 'kwargs': {}, "
        "'type': 'tasks.check_buffer_task', 'hostname': 'worker1@vm', 'time_start': 1795478807.69, "
        "'acknowledged': True, 'delivery_info': {'exchange': '', 'routing_key': 'celery', 'priority': 3, "
        "'redelivered': False}, 'worker_pid': 101}\n"
        "->  worker2@vm: OK\n"
        "    - empty -\n"
        "\n2 nodes online.\n"
    )


def test_inspect_reserved_lists_prefetched_messages(beating):
    waiting = {**TASK, "time_start": None, "acknowledged": False, "worker_pid": None}
    beating("worker1@vm", info=INFO, processes={101: {"active": [], "reserved": [waiting]}})

    lines = run_celery("-A", "tasks", "inspect", "reserved").stdout.splitlines()

    assert lines[1].startswith("    * {'id': '7b1c', 'name': 'tasks.check_buffer_task'")
    assert "'time_start': None, 'acknowledged': False" in lines[1] and lines[1].endswith("'worker_pid': None}")


def test_inspect_registered_lists_the_five_tasks(two_nodes):
    lines = run_celery("-A", "tasks", "inspect", "registered", "-d", "worker2@vm").stdout.splitlines()

    assert lines == ["->  worker2@vm: OK", "    * tasks.check_buffer_task", "    * tasks.process_message_task",
                     "    * tasks.sync_operator_message_to_graph_task", "    * tasks.update_langgraph_state_task",
                     "    * tasks.update_message_status_task", "", "1 node online."]


def test_inspect_active_queues_prints_kombus_queue_dicts(two_nodes):
    lines = run_celery("-A", "tasks", "inspect", "active_queues", "-d", "worker1@vm").stdout.splitlines()

    assert lines[1].startswith("    * {'name': 'default', 'exchange': {'name': 'celery', 'type': 'direct'")
    assert lines[2].startswith("    * {'name': 'state', 'exchange': {'name': 'celery', 'type': 'direct'")
    assert "'routing_key': 'celery', 'queue_arguments': None" in lines[1]
    assert "'routing_key': 'state', 'queue_arguments': None" in lines[2]


def test_inspect_stats_prints_sorted_json_from_the_registry(two_nodes):
    result = run_celery("-A", "tasks", "inspect", "stats", "-d", "worker1@vm")

    head, body = result.stdout.split("\n", 1)
    body, tail = body.rsplit("\n\n", 1)
    assert head == "->  worker1@vm: OK"
    assert tail == "1 node online.\n"
    assert body.startswith("    {\n        \"broker\": {")
    stats = json.loads(textwrap.dedent(body))
    assert list(stats) == sorted(stats)
    assert stats["broker"] == {"hostname": "127.0.0.1", "userid": None, "virtual_host": "5", "port": 6379,
                               "ssl": False, "transport": "redis"}
    assert stats["pid"] == 100 and stats["prefetch_count"] == 8
    assert stats["pool"]["implementation"] == "prefork"
    assert stats["pool"]["max-concurrency"] == 2 and stats["pool"]["max-tasks-per-child"] == 3
    assert stats["pool"]["processes"] == [101, 102]
    assert stats["pool"]["timeouts"] == [240.0, 300.0]
    assert stats["total"] == {"tasks.check_buffer_task": 5, "tasks.process_message_task": 1}
    assert stats["uptime"] > 0
    # What the registry does not know is not made up.
    assert stats["clock"] is None and stats["rusage"] is None


def test_inspect_json_is_one_line_without_the_count(two_nodes):
    result = run_celery("-A", "tasks", "inspect", "active", "--json")

    assert result.stdout.count("\n") == 1
    assert json.loads(result.stdout) == {"worker1@vm": [TASK], "worker2@vm": []}


def test_inspect_without_nodes_exits_69(redis_client):
    result = run_celery("-A", "tasks", "inspect", "active", "-t", "0.2")

    assert (result.returncode, result.stderr) == (69, "Error: No nodes replied within time constraint\n")


def test_an_unknown_inspect_command_lists_the_available_ones(two_nodes):
    result = run_celery("-A", "tasks", "inspect", "bogus")

    assert result.returncode == 2
    assert result.stderr == ("Error: Command bogus not recognized. Available inspect commands: "
                             "active, active_queues, ping, registered, reserved, stats\n")


@pytest.mark.parametrize("command", ["revoked", "scheduled", "conf", "memdump", "clock", "query_task"])
def test_celery_inspect_commands_not_offered_are_refused_by_name(two_nodes, command):
    result = run_celery("-A", "tasks", "inspect", command)

    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: 'inspect {command}' is a Celery inspect command this project "
                                    "does not offer: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("argv", [["status", "--pattern", "w*"], ["inspect", "ping", "--bogus"],
                                  ["status", "-t", "soon"], ["inspect", "ping", "-d", ""]])
def test_an_unknown_option_or_bad_value_is_a_usage_error_naming_it(redis_client, argv):
    result = run_celery("-A", "tasks", *argv)

    assert result.returncode == 2
    assert argv[-2] in result.stderr.splitlines()[-1] or argv[-1] in result.stderr.splitlines()[-1]
    assert result.stderr.splitlines()[-1].startswith("Error: ")
