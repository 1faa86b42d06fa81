"""A worker node's metrics port and its JSON task log, with real worker processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import extra_actors as test_actors
from tests.support.metrics import free_port, scrape, value
from tests.support.processes import stop
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def wait_for_value(port: int, expected: float, name: str, timeout_s: float = 120, **labels: str) -> dict:
    """The scrape in which ``name{labels}`` first equals ``expected``."""
    try:
        return wait_for(lambda: (lambda s: s if value(s, name, **labels) == expected else None)(scrape(port)),
                        timeout_s, 0.2)
    except AssertionError:
        raise AssertionError(f"{name}{labels} != {expected}: {value(scrape(port), name, **labels)}") from None


def node_env(port: int, tmp_path: Path, **more: str) -> dict[str, str]:
    """A node's metrics on ``port``, its files under the test's own directory."""
    return {"WORKER_METRICS_PORT": str(port), "WORKER_METRICS_DIR": str(tmp_path / "metrics"), **more}


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def structured(records: list[dict], task_id: str, event: str) -> list[dict]:
    """The structured ``started`` or ``finished`` lines of a task."""
    return [r for r in records if r["task_id"] == task_id and r["event"] == event]


def carry_outcome(records: list[dict], task_id: str) -> list[dict]:
    return [r for r in records if r["task_id"] == task_id and (r["outcome"] is not None or r["duration_s"] is not None)]


@pytest.mark.slow
def test_a_prefork_node_counts_the_tasks_of_every_child_and_of_replaced_ones(celery_worker, tmp_path):
    # Given a prefork node of two children, each replaced after one task, logging JSON per process
    port = free_port()
    pattern = tmp_path / "node%I.log"
    celery_worker(["worker", "-P", "prefork", "-c", "2", "-l", "info", "--max-tasks-per-child=1",
                   "-f", str(pattern)], **node_env(port, tmp_path, LOG_FORMAT="json"))
    main_log = tmp_path / "node.log"
    wait_for(lambda: main_log.exists() and " ready." in main_log.read_text(), 120)

    # When four tasks run (so in four children, two of them at once)
    sent = [test_actors.test_record_default.send(f"t{i}") for i in range(4)]

    # Then the node's port counts all four, and the four children replaced for max tasks
    samples = wait_for_value(port, 4, "assistant_worker_child_restarts_total", reason="max_tasks")
    assert value(samples, "assistant_tasks_received_total", task="test_record_default") == 4
    assert value(samples, "assistant_tasks_succeeded_total", task="test_record_default") == 4
    assert value(samples, "assistant_task_duration_seconds_count", task="test_record_default") == 4
    assert value(samples, "assistant_tasks_in_progress", task="test_record_default") == 0
    assert value(samples, "assistant_tasks_failed_total", task="test_record_default") == 0

    # And the replaced children's files were folded into the node's archive: what is left is the
    # archive and the files of the supervisor and its two live children
    def files() -> list[str]:
        return sorted(p.name for p in (tmp_path / "metrics").glob("*/*.db"))

    wait_for(lambda: len({name.rsplit("_", 1)[1] for name in files()} - {"archived.db"}) <= 3, 120)
    assert "counter_archived.db" in files() and "histogram_archived.db" in files(), files()

    # And every process's log file has one JSON object per line, the task lines with their fields
    children = [tmp_path / f"node-{n}.log" for n in range(1, 7) if (tmp_path / f"node-{n}.log").exists()]
    records = [r for path in children for r in json_lines(path)]
    for message in sent:
        mine = [r for r in records if r["task_id"] == message.message_id]
        received = [r for r in mine if r["message"].endswith("] received")]
        succeeded = [r for r in mine if " succeeded in " in r["message"]]
        assert len(received) == 1 and len(succeeded) == 1, mine
        assert received[0]["message"] == f"Task tasks.test_record_default[{message.message_id}] received"
        assert received[0]["task_name"] == "test_record_default" and received[0]["queue"] == "default"
        assert received[0]["process"].startswith("ForkPoolWorker-") and received[0]["level"] == "INFO"
        assert succeeded[0]["timestamp"].endswith("Z")
        # (one structured start and one finish line; only the finish line carries outcome and duration)
        assert len(structured(mine, message.message_id, "started")) == 1
        finished = structured(mine, message.message_id, "finished")
        assert carry_outcome(mine, message.message_id) == finished and len(finished) == 1
        assert finished[0]["outcome"] == "succeeded" and finished[0]["duration_s"] >= 0
    main_records = json_lines(main_log)
    assert any(r["message"].endswith(" ready.") and r["process"] == "MainProcess" for r in main_records)


@pytest.mark.slow
def test_failures_retries_time_limits_and_running_tasks_are_counted(celery_worker, redis_client, tmp_path):
    # Given a prefork node of two children serving its metrics
    port = free_port()
    worker = celery_worker(["worker", "-P", "prefork", "-c", "2", "-l", "info"], **node_env(port, tmp_path))
    worker.wait_ready()

    # When a task waits at a gate, the node shows it in progress
    test_actors.test_gate.send("test:metrics-gate")
    wait_for_value(port, 1, "assistant_tasks_in_progress", task="test_gate")
    redis_client.set("test:metrics-gate", 1)
    wait_for_value(port, 0, "assistant_tasks_in_progress", task="test_gate")

    # A task that fails for good counts as failed; a transient failure as retried
    test_actors.test_fail_for_good.send("bad")
    test_actors.test_flaky.send("flaky")
    wait_for_value(port, 1, "assistant_tasks_failed_total", task="test_fail_for_good")
    samples = wait_for_value(port, 1, "assistant_tasks_retried_total", task="test_flaky")
    assert value(samples, "assistant_tasks_failed_total", task="test_flaky") == 0

    # A task that ignores its soft limit hits both limits and is retried
    test_actors.test_hard_limit.apply_async(time_limit=1, soft_time_limit=0.5)
    wait_for_value(port, 1, "assistant_tasks_retried_total", task="test_hard_limit")
    # (a hit is counted by the limits' watcher, beside the task's thread)
    wait_for_value(port, 1, "assistant_task_time_limit_hits_total", task="test_hard_limit", limit="soft")
    wait_for_value(port, 1, "assistant_task_time_limit_hits_total", task="test_hard_limit", limit="hard")

    # A task blocked in C code past its hard limit: its child is replaced (time_limit),
    # and the supervisor retries its message
    test_actors.test_blocked_in_c.apply_async(args=["stuck"], time_limit=1)
    wait_for_value(port, 1, "assistant_worker_child_restarts_total", reason="time_limit")
    wait_for_value(port, 1, "assistant_task_time_limit_hits_total", task="test_blocked_in_c", limit="hard")
    samples = wait_for_value(port, 1, "assistant_tasks_retried_total", task="test_blocked_in_c")
    # (the dead child's running task left the live gauge)
    assert value(samples, "assistant_tasks_in_progress", task="test_blocked_in_c") == 0
    assert value(samples, "assistant_tasks_received_total", task="test_gate") == 1
    assert value(samples, "assistant_tasks_succeeded_total", task="test_gate") == 1


@pytest.mark.slow
def test_children_replaced_for_memory_or_a_crash_are_counted_with_their_reason(celery_worker, redis_client, tmp_path):
    # Given a prefork child that retires after any task above 1 KiB of memory (always)
    port = free_port()
    worker = celery_worker(["worker", "-P", "prefork", "-c", "1", "-l", "info", "--max-memory-per-child=1"],
                           **node_env(port, tmp_path))
    worker.wait_ready()

    # When its task ends the child's process without a word
    test_actors.test_kill_own_process.send("gone")

    # Then the supervisor counts a crash, and the lost task as retried
    samples = wait_for_value(port, 1, "assistant_worker_child_restarts_total", reason="crashed")
    assert value(samples, "assistant_tasks_retried_total", task="test_kill_own_process") == 1
    assert value(samples, "assistant_tasks_in_progress", task="test_kill_own_process") == 0

    # And a task that completes retires its child for memory
    test_actors.test_record_default.send("big")
    samples = wait_for_value(port, 1, "assistant_worker_child_restarts_total", reason="max_memory")
    assert value(samples, "assistant_tasks_succeeded_total", task="test_record_default") == 1
    assert value(samples, "assistant_worker_child_restarts_total", reason="max_tasks") == 0


@pytest.mark.slow
def test_a_node_whose_port_is_taken_says_so_once_and_still_works(celery_worker, redis_client, tmp_path):
    # Given something already listening on the node's metrics port
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        worker = celery_worker(["worker", "-P", "threads", "-c", "2", "-l", "info"], **node_env(port, tmp_path))

        # When the node starts, it logs one ERROR naming the port and the setting
        worker.wait_ready()
        output = worker.output()
        errors = [line for line in output.splitlines() if "ERROR" in line and f"port {port}" in line]
        assert len(errors) == 1 and "WORKER_METRICS_PORT" in errors[0], output

        # And it processes tasks all the same
        sent = test_actors.test_record_default.send("still works")
        worker.wait_for_output(f"Task tasks.test_record_default[{sent.message_id}] succeeded in ", 120)
        assert redis_client.lrange("test:order", 0, -1) == [b"still works"]


@pytest.mark.slow
def test_a_solo_node_serves_its_metrics_and_keeps_celerys_text_lines(celery_worker, tmp_path):
    # Given a solo node with the default (text) log format and a log file
    port = free_port()
    log = tmp_path / "solo.log"
    celery_worker(["worker", "-P", "solo", "-l", "info", "-f", str(log)], **node_env(port, tmp_path))
    wait_for(lambda: log.exists() and " ready." in log.read_text(), 120)

    # When a task runs
    sent = test_actors.test_record_default.send("solo")

    # Then its port counts it, and the log file has Celery's lines unchanged
    wait_for_value(port, 1, "assistant_tasks_succeeded_total", task="test_record_default")
    wait_for(lambda: "outcome=succeeded" in log.read_text(), 120)
    text = log.read_text()
    assert f"INFO/MainProcess] Task tasks.test_record_default[{sent.message_id}] received\n" in text
    assert f"INFO/MainProcess] Task tasks.test_record_default[{sent.message_id}] succeeded in " in text
    assert not [line for line in text.splitlines() if line.startswith("{")]

    # And another path than /metrics is a 404 with a JSON reason
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=10)
    assert refused.value.code == 404
    assert "/metrics" in json.loads(refused.value.read())["error"]


def start_dramatiq(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "tests.support.worker_app", "--processes", "2", "--threads", "2"],
            cwd=ROOT, env={**os.environ, **env}, start_new_session=True, stdout=subprocess.DEVNULL, stderr=sink,
        )


@pytest.mark.slow
def test_the_plain_dramatiq_cli_serves_the_metrics_of_all_its_processes(global_broker, redis_client, tmp_path):
    # Given the plain dramatiq CLI with two worker processes, logging JSON
    port = free_port()
    log = tmp_path / "dramatiq.log"
    metrics_dir = tmp_path / "metrics"
    proc = start_dramatiq({"WORKER_METRICS_PORT": str(port), "LOG_FORMAT": "json",
                           "WORKER_METRICS_DIR": str(metrics_dir)}, log)
    try:
        wait_for(lambda: scrape(port) is not None, 120, 0.2)

        # When a task waits at a gate, then more tasks run beside and after it
        gate = test_actors.test_gate.send("test:plain-gate")
        wait_for_value(port, 1, "assistant_tasks_in_progress", task="test_gate")
        for i in range(6):
            test_actors.test_record_default.send(f"p{i}")
        wait_for_value(port, 6, "assistant_tasks_succeeded_total", task="test_record_default")
        redis_client.set("test:plain-gate", 1)

        # Then its port counts them all, whichever process ran them
        wait_for_value(port, 1, "assistant_tasks_succeeded_total", task="test_gate")
        # (a scrape reads one file after another, so it may see the count before the gauge's drop)
        samples = wait_for_value(port, 0, "assistant_tasks_in_progress", task="test_gate")
        assert value(samples, "assistant_tasks_received_total", task="test_record_default") == 6

        # And the worker processes' task lines are JSON with their fields
        records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        done = structured(records, gate.message_id, "finished")
        assert len(done) == 1 and done[0]["outcome"] == "succeeded" and done[0]["queue"] == "default"
        assert done[0]["duration_s"] > 0 and carry_outcome(records, gate.message_id) == done
        assert len([r for r in records if r["task_id"] == gate.message_id and " succeeded in " in r["message"]]) == 1
        assert [p.name for p in metrics_dir.iterdir() if p.is_dir()] == [f"dramatiq-{proc.pid}"]
    finally:
        stop(proc, 30)

    # And its metric files are gone once it stopped
    assert not (metrics_dir / f"dramatiq-{proc.pid}").exists()


@pytest.mark.slow
def test_the_log_level_holds_in_prefork_children(celery_worker, redis_client, tmp_path):
    # Given a prefork node at WARNING, logging JSON to one file per process
    port = free_port()
    pattern = tmp_path / "warn%I.log"
    celery_worker(["worker", "-P", "prefork", "-c", "1", "-l", "WARNING", "-f", str(pattern)],
                  **node_env(port, tmp_path, LOG_FORMAT="json"))

    # When one task succeeds and one fails for good
    ok = test_actors.test_record_default.send("quiet")
    bad = test_actors.test_fail_for_good.send("loud")
    wait_for_value(port, 1, "assistant_tasks_failed_total", task="test_fail_for_good")
    wait_for(lambda: redis_client.lrange("test:order", 0, -1) == [b"quiet"])

    # Then the child's log has the ERROR line of the failure, with its fields, and no INFO line
    child_log = tmp_path / "warn-1.log"
    wait_for(lambda: child_log.exists() and bad.message_id in child_log.read_text(), 120)
    records = json_lines(child_log)
    assert [r["level"] for r in records if r["level"] in ("DEBUG", "INFO")] == []
    failure = [r for r in records if r["task_id"] == bad.message_id]
    assert len(failure) == 1, failure
    assert failure[0]["message"] == (f"Task tasks.test_fail_for_good[{bad.message_id}] raised unexpected: "
                                     "ValueError(\"bad input 'loud'\")")
    assert (failure[0]["level"], failure[0]["task_name"], failure[0]["queue"]) == ("ERROR", "test_fail_for_good",
                                                                                   "default")
    assert "ValueError: bad input" in failure[0]["exc_info"]
    # (the structured finish line is INFO: not written at WARNING)
    assert (failure[0]["event"], failure[0]["outcome"]) == (None, None)
    assert ok.message_id not in child_log.read_text()


@pytest.mark.slow
def test_each_run_has_exactly_one_structured_start_and_finish_line(celery_worker, redis_client, tmp_path):
    # Given a threads node logging JSON to a file, retrying transient failures soon
    log = tmp_path / "threads.log"
    celery_worker(["worker", "-P", "threads", "-c", "2", "-l", "info", "-f", str(log)],
                  **node_env(0, tmp_path, LOG_FORMAT="json"))
    wait_for(lambda: log.exists() and " ready." in log.read_text(), 120)

    # When one task succeeds, one fails for good and one fails transiently (retried)
    ok = test_actors.test_record_default.send("fine")
    bad = test_actors.test_fail_for_good.send("bad")
    flaky = test_actors.test_flaky.send_with_options(args=("flaky",), retry_delays=(600,))
    wait_for(lambda: all(f"task finished task={name} id={m.message_id}" in log.read_text()
                         for name, m in (("test_record_default", ok), ("test_fail_for_good", bad),
                                         ("test_flaky", flaky))), 120)
    records = json_lines(log)

    # Then each run has one structured start line and one finish line, which alone carries outcome and duration
    for message, outcome in ((ok, "succeeded"), (bad, "failed"), (flaky, "retried")):
        started = structured(records, message.message_id, "started")
        finished = structured(records, message.message_id, "finished")
        assert len(started) == 1 and len(finished) == 1, records
        assert finished[0]["outcome"] == outcome and finished[0]["duration_s"] >= 0
        assert carry_outcome(records, message.message_id) == finished
        assert (started[0]["task_name"], started[0]["queue"]) == (finished[0]["task_name"], "default")
        # (Celery's lines keep their words and the task's name, id and queue)
        celery = [r for r in records if r["task_id"] == message.message_id and r["message"].startswith("Task tasks.")]
        assert celery and all(r["event"] is None and r["queue"] == "default" for r in celery)
