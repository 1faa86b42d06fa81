"""``celery purge``: Celery's prompt and messages; only waiting messages go."""

from __future__ import annotations

import pytest

import tasks
from actors import keys
from tests.support.cli import run_celery

PROMPT = ("WARNING:This will remove all tasks from queues: default, state.\n"
          "         There is no undo for this operation!\n\n"
          "(to skip this prompt use the -f option)\n"
          "Are you sure you want to delete all tasks? [y/N]: ")


@pytest.fixture
def queued(global_broker, redis_client):
    """Two waiting default messages, one waiting state message, and one of each other kind."""
    tasks.check_buffer_task.delay("c1", 1)
    tasks.update_message_status_task.delay({"id": "wamid.1", "status": "sent", "timestamp": "1"})
    tasks.update_langgraph_state_task.delay("c1", "takeover")
    tasks.check_buffer_task.apply_async(args=["c1", 2], countdown=600)  # delayed
    redis_client.lpush(keys.inflight_key("default", "w1.1"), b"held by a worker")
    redis_client.zadd(keys.dead_key("default"), {"m-dead": 1})
    assert (redis_client.llen("celery"), redis_client.llen("state")) == (2, 1)


def untouched(redis_client) -> bool:
    return (redis_client.zcard(keys.delayed_key("default")) == 1
            and redis_client.llen(keys.inflight_key("default", "w1.1")) == 1
            and redis_client.zcard(keys.dead_key("default")) == 1)


def test_answering_no_aborts_and_keeps_everything(queued, redis_client):
    result = run_celery("-A", "tasks", "purge", input="N\n")

    assert result.returncode == 1
    assert result.stdout == PROMPT
    assert result.stderr == "Aborted!\n"
    assert (redis_client.llen("celery"), redis_client.llen("state")) == (2, 1)


def test_end_of_input_without_force_aborts(queued, redis_client):
    result = run_celery("-A", "tasks", "purge", input="")

    assert (result.returncode, result.stdout, result.stderr) == (1, PROMPT + "\n", "Aborted!\n")
    assert redis_client.llen("celery") == 2


def test_answering_yes_purges_only_waiting_messages(queued, redis_client):
    result = run_celery("-A", "tasks", "purge", input="y\n")

    assert result.returncode == 0
    assert result.stdout == PROMPT + "Purged 3 messages from 2 known task queues.\n"
    assert (redis_client.llen("celery"), redis_client.llen("state")) == (0, 0)
    assert untouched(redis_client)


def test_another_answer_is_asked_again(queued, redis_client):
    result = run_celery("-A", "tasks", "purge", input="maybe\nyes\n")

    assert result.stdout == PROMPT + "Error: invalid input\n" + PROMPT + "Purged 3 messages from 2 known task queues.\n"


def test_force_skips_the_prompt(queued, redis_client):
    result = run_celery("-A", "tasks", "purge", "-f")

    assert (result.returncode, result.stdout) == (0, "Purged 3 messages from 2 known task queues.\n")
    assert untouched(redis_client)


def test_queues_and_exclusions_pick_the_lists(queued, redis_client):
    result = run_celery("-A", "tasks", "purge", "-f", "-Q", "celery,state", "-X", "default")

    assert result.stdout == "Purged 1 message from 1 known task queue.\n"
    assert (redis_client.llen("celery"), redis_client.llen("state")) == (2, 0)


def test_two_names_of_one_queue_count_as_one_queue(queued, redis_client):
    result = run_celery("-A", "tasks", "purge", "-Q", "default,celery", input="y\n")

    assert result.stdout == PROMPT.replace("queues: default, state", "queue: default") + \
        "Purged 2 messages from 1 known task queue.\n"
    assert (redis_client.llen("celery"), redis_client.llen("state")) == (0, 1)


def test_the_prompt_names_only_the_chosen_queue(queued, redis_client):
    result = run_celery("-A", "tasks", "purge", "-Q", "default", input="y\n")

    assert result.stdout.startswith("WARNING:This will remove all tasks from queue: default.\n")
    assert result.stdout.endswith("Purged 2 messages from 1 known task queue.\n")
    assert redis_client.llen("state") == 1


def test_celerys_priority_side_lists_are_waiting_messages_too(redis_client):
    redis_client.lpush("state\x06\x166", b"left by the old deployment", b"and another")
    redis_client.lpush("celery\x06\x163", b"one more")

    result = run_celery("-A", "tasks", "purge", "-f")

    assert result.stdout == "Purged 3 messages from 2 known task queues.\n"
    assert not redis_client.exists("state\x06\x166", "celery\x06\x163")


def test_nothing_to_purge_says_so(redis_client):
    assert run_celery("-A", "tasks", "purge", "-f").stdout == "No messages purged from 2 queues.\n"


def test_an_unknown_queue_is_refused_by_name(redis_client):
    result = run_celery("-A", "tasks", "purge", "-f", "-Q", "state,bogus")

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("Error: argument -Q/--queues: unknown queue 'bogus': this project's "
                                              "queues are default (also called celery) and state")


def test_an_empty_queue_list_is_refused_not_taken_for_all_queues(queued, redis_client):
    result = run_celery("-A", "tasks", "purge", "-f", "-Q", "")

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "Error: argument -Q/--queues: no queue named"
    assert redis_client.llen("celery") == 2


def test_purge_without_redis_says_the_broker_is_unreachable():
    from tests.support.redis_server import free_port

    result = run_celery("-A", "tasks", "-b", f"redis://127.0.0.1:{free_port()}/0", "purge", "-f")

    assert result.returncode == 69
    assert result.stderr.startswith("Error: Could not connect to the message broker. ")
