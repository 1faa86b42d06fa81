"""``celery -A tasks worker``: the runbook's commands as real processes on the real Redis."""

from __future__ import annotations

import os
import re
import signal
import socket

import pytest
import redis

from actors import keys, registry
from tests.support import extra_actors as test_actors
from tests.support.celery_worker import TEST_ACTORS
from tests.support.cli import run_celery
from tests.support.redis_server import PrivateRedis, free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

#: The worker lines of the runbook, verbatim after ``celery -A tasks``.
RUNBOOK_WORKERS = [
    "worker -l info -P solo -Q default,state",
    "worker -l info -P solo -Q default,state -n worker1@%h",
    "worker -l info --concurrency=4 --max-tasks-per-child=100 --time-limit=300 --soft-time-limit=240 "
    "-Q default,state",
]


def _order(redis_client) -> list[str]:
    return [v.decode() for v in redis_client.lrange("test:order", 0, -1)]


@pytest.mark.parametrize("line", RUNBOOK_WORKERS)
def test_a_runbook_worker_line_runs_tasks_and_stops_warmly_on_sigterm(line, celery_worker, redis_client):
    # Given the runbook's command, started as written
    worker = celery_worker(line)
    worker.wait_ready()

    # When a task of each queue is sent
    on_default = test_actors.test_record_default.delay("on default")
    on_state = test_actors.test_record_state.delay("on state")

    # Then both run, with Celery's log lines
    wait_for(lambda: sorted(_order(redis_client)) == ["on default", "on state"], 60)
    output = worker.wait_for_output(f"Task tasks.test_record_state[{on_state.id}] succeeded in ")
    assert f"Task tasks.test_record_default[{on_default.id}] received" in output
    assert "[config]" in output and "[queues]" in output and "[tasks]" in output
    assert ".> default          exchange=celery(direct) key=celery" in output
    assert ".> state            exchange=celery(direct) key=state" in output
    assert ".> results:     disabled://" in output
    pool = "solo" if "solo" in line else "prefork"
    assert f" ({pool})" in output and ".> concurrency: " in output
    assert ("/ForkPoolWorker-" in output) == (pool == "prefork")
    if "-n worker1@%h" in line:
        assert f"worker1@{socket.gethostname()} ready." in output
    wait_for(lambda: len(registry.live_nodes(redis_client)) == 1)

    # When SIGTERM reaches the main process, it stops warmly with exit code 0
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert "worker: Warm shutdown (MainProcess)" in worker.output()
    # and leaves the registry and the broker's heartbeats at once
    assert registry.live_nodes(redis_client) == []
    assert redis_client.zcard(keys.HEARTBEATS) == 0


def test_two_named_nodes_side_by_side_are_two_nodes(celery_worker, redis_client):
    first = celery_worker("worker -l info -P solo -Q default,state -n worker1@%h")
    second = celery_worker("worker -l info -P solo -Q default,state -n worker2@%h")
    first.wait_ready()
    second.wait_ready()

    host = socket.gethostname()
    nodes = wait_for(lambda: (lambda found: found if len(found) == 2 else None)(registry.live_nodes(redis_client)))
    assert [n.name for n in nodes] == [f"worker1@{host}", f"worker2@{host}"]
    for node, proc in zip(nodes, (first, second), strict=True):
        assert node.info["pid"] == proc.pid
        assert node.info["pool"] == "solo"
        assert node.info["queues"] == ["default", "state"]
        assert list(node.processes) == [str(proc.pid)]

    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert [n.name for n in registry.live_nodes(redis_client)] == [f"worker2@{host}"]


def test_max_tasks_per_child_replaces_only_that_child_while_another_runs_a_long_task(celery_worker, redis_client):
    # Given two children, one of them in a long task
    worker = celery_worker("worker -l info -c 2 --max-tasks-per-child=3 --prefetch-multiplier=1 -Q default")
    worker.wait_ready()
    long_task = test_actors.test_gate.delay("test:release-gate")
    wait_for(lambda: _order(redis_client) == ["gate"], 60)
    busy = wait_for(lambda: [t["worker_pid"] for n in registry.live_nodes(redis_client) for t in n.active])
    assert len(busy) == 1

    # When the other child runs three tasks
    for n in range(3):
        test_actors.test_record_default.delay(f"short {n}")
    wait_for(lambda: len(_order(redis_client)) == 4, 60)

    # Then that child alone is replaced (ForkPoolWorker-3 starts) ...
    output = worker.wait_for_output("(max tasks per child reached (3))")
    retired = re.search(r"Process 'ForkPoolWorker-[12]' pid:(\d+) exited with 'exitcode 0' "
                        r"\(max tasks per child reached \(3\)\)", output)
    assert retired is not None, output
    retired_pid = int(retired.group(1))
    assert retired_pid != busy[0]
    # the registry shows the busy child and a new one in place of the retired one
    wait_for(lambda: (lambda pids: len(pids) == 2 and busy[0] in pids and retired_pid not in pids)(
        _pids(redis_client)), 90)
    # ... while the long task keeps running in its child, which is not restarted
    assert [t["id"] for n in registry.live_nodes(redis_client) for t in n.active] == [long_task.id]
    redis_client.set("test:release-gate", 1)
    worker.wait_for_output(f"Task tasks.test_gate[{long_task.id}] succeeded in ", 60)
    assert _order(redis_client).count("gate") == 1
    assert busy[0] in _pids(redis_client)

    # And the replacement takes work
    after = test_actors.test_record_default.delay("after")
    wait_for(lambda: "after" in _order(redis_client), 60)
    assert "/ForkPoolWorker-3] Task tasks.test_record_default[" + after.id + "] received" in \
        worker.wait_for_output(f"Task tasks.test_record_default[{after.id}] succeeded in ", 30)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def _pids(redis_client) -> set[int]:
    return {int(pid) for n in registry.live_nodes(redis_client) for pid in n.processes}


def test_a_task_blocked_in_c_is_stopped_at_the_hard_limit_and_retried(celery_worker, redis_client):
    # Given a prefork node with a hard limit of 2 s
    worker = celery_worker("worker -l info -c 1 --time-limit=2 --soft-time-limit=1 -Q default")
    worker.wait_ready()

    # When a task blocks in recv() on a socket that never answers
    sent = test_actors.test_blocked_in_c.delay("stuck")
    wait_for(lambda: redis_client.llen("test:blocked") == 1, 60)
    first_pid = redis_client.lindex("test:blocked", 0).decode().split(":")[1]

    # Then its child is killed and replaced, and the message waits for its first retry (5 s)
    output = worker.wait_for_output(
        f"Task tasks.test_blocked_in_c[{sent.id}] retry: Retry in 5s: TimeLimitExceeded", 60)
    assert f"Hard time limit (2s) exceeded for tasks.test_blocked_in_c[{sent.id}]" in output
    assert f"Process 'ForkPoolWorker-1' pid:{first_pid} exited with 'signal 9 (SIGKILL)'" in output
    assert redis_client.llen("celery") == 0
    # the retry waits in the delayed set (the line is logged just before its ZADD; it is due in 5 s)
    wait_for(lambda: redis_client.zcard(keys.delayed_key("default")) == 1, 4)
    assert redis_client.llen("test:blocked") == 1
    # and runs again, once, in the replacement child
    wait_for(lambda: redis_client.llen("test:blocked") == 2, 60)
    runs = [v.decode() for v in redis_client.lrange("test:blocked", 0, -1)]
    assert runs[1].split(":")[1] != first_pid
    assert "ForkPoolWorker-2" in worker.wait_for_output(f"Task tasks.test_blocked_in_c[{sent.id}] received", 5)
    output = worker.wait_for_output("retry: Retry in 10s: TimeLimitExceeded", 60)
    assert redis_client.llen("test:blocked") == 2


@pytest.mark.parametrize("pool", ["solo -c 1", "threads -c 2"])
def test_under_solo_or_threads_a_task_blocked_in_c_makes_the_process_exit_75_after_scheduling_its_retry(
        pool, celery_worker, redis_client, tmp_path):
    pidfile = tmp_path / "replaced.pid"
    worker = celery_worker(f"worker -l info -P {pool} --time-limit=2 --soft-time-limit=1 -Q default "
                           f"--pidfile {pidfile}")
    worker.wait_ready()
    assert pidfile.read_text().strip() == str(worker.pid)
    sent = test_actors.test_blocked_in_c.delay("stuck solo")

    assert worker.wait(90) == 75
    # It leaves with os._exit, but its pidfile goes first: the node its service manager
    # starts again finds none (on Windows a leftover one would refuse it for good)
    assert not pidfile.exists()
    output = worker.output()
    assert f"Task tasks.test_blocked_in_c[{sent.id}] retry: Retry in 5s: TimeLimitExceeded" in output
    # Nothing is left in flight: the message waits in the delayed set for its retry
    assert redis_client.zcard(keys.delayed_key("default")) == 1
    assert redis_client.llen("celery") == 0
    assert list(redis_client.scan_iter(keys.inflight_key("default", "*"))) == []
    assert registry.live_nodes(redis_client) == []


@pytest.mark.parametrize("pool", ["solo", "prefork", "threads"])
def test_the_soft_limit_is_raised_inside_the_task(pool, celery_worker, redis_client):
    worker = celery_worker(f"worker -l info -P {pool} -c 1 --time-limit=20 --soft-time-limit=1 -Q default")
    worker.wait_ready()
    sent = test_actors.test_soft_limit.delay()
    wait_for(lambda: _order(redis_client) == ["soft limit caught"], 60)
    output = worker.wait_for_output(f"Task tasks.test_soft_limit[{sent.id}] succeeded in ", 30)
    assert f"Soft time limit (1s) exceeded for tasks.test_soft_limit[{sent.id}]" in output


@pytest.mark.parametrize(("pool", "to_group"), [("solo", False), ("prefork", False), ("prefork", True)],
                         ids=["solo", "prefork", "prefork-whole-process-group"])
def test_sigterm_lets_the_running_task_finish(pool, to_group, celery_worker, redis_client):
    worker = celery_worker(f"worker -l info -P {pool} -c 1 --time-limit=60 --soft-time-limit=50 -Q default")
    worker.wait_ready()
    sent = test_actors.test_gate.delay("test:release-gate")
    wait_for(lambda: _order(redis_client) == ["gate"], 60)

    # A signal to the whole group (as a terminal or a careless kill sends
    # it) is still one warm shutdown: children are stopped by the supervisor.
    if to_group:
        os.killpg(worker.pid, signal.SIGTERM)
    else:
        worker.signal(signal.SIGTERM)
    worker.wait_for_output("worker: Warm shutdown (MainProcess)", 30)
    assert worker.proc.poll() is None  # still finishing its task
    redis_client.set("test:release-gate", 1)

    assert worker.wait() == 0
    assert f"Task tasks.test_gate[{sent.id}] succeeded in " in worker.output()
    assert redis_client.llen("celery") == 0
    assert list(redis_client.scan_iter(keys.inflight_key("default", "*"))) == []


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_a_warm_shutdown_gives_prefetched_messages_back_to_their_queue(pool, celery_worker, redis_client):
    # Given one worker thread in a gated task, holding two more messages it prefetched (default multiplier 4)
    worker = celery_worker(f"worker -l debug -P {pool} -c 1 --time-limit=60 --soft-time-limit=50 -Q default")
    worker.wait_ready()
    test_actors.test_gate.delay("test:release-gate")
    wait_for(lambda: _order(redis_client) == ["gate"], 60)
    waiting = [test_actors.test_record_default.delay(f"prefetched {n}") for n in range(2)]
    wait_for(lambda: redis_client.llen("celery") == 0, 30)  # taken into the worker's in-flight list

    # When it is stopped warmly (prefork: by its supervisor, over the pipe) and, once it
    # takes no new task, its running task finishes
    worker.signal(signal.SIGTERM)
    worker.wait_for_output("worker: Warm shutdown (MainProcess)", 30)
    worker.wait_for_output("Taking no new task: stopping.", 30)
    redis_client.set("test:release-gate", 1)
    assert worker.wait() == 0

    # Then the prefetched messages wait in their queue again, unrun
    assert redis_client.llen("celery") == 2
    assert all(any(m.id.encode() in e for e in redis_client.lrange("celery", 0, -1)) for m in waiting)
    assert _order(redis_client) == ["gate"]
    assert list(redis_client.scan_iter(keys.inflight_key("default", "*"))) == []


def test_a_child_retiring_after_max_tasks_gives_its_prefetched_messages_back(celery_worker, redis_client):
    # Given a child that retires after one task, in a gated task with two prefetched messages
    worker = celery_worker("worker -l info -P prefork -c 1 --max-tasks-per-child=1 -Q default")
    worker.wait_ready()
    test_actors.test_gate.delay("test:release-gate")
    wait_for(lambda: _order(redis_client) == ["gate"], 60)
    waiting = [test_actors.test_record_default.delay(f"prefetched {n}") for n in range(2)]
    wait_for(lambda: redis_client.llen("celery") == 0, 30)

    # When its task ends, it retires
    redis_client.set("test:release-gate", 1)
    output = worker.wait_for_output("(max tasks per child reached (1))", 60)
    assert "Process 'ForkPoolWorker-1'" in output

    # Then the two messages run once each, in replacements, not in the retired child
    wait_for(lambda: sorted(_order(redis_client)) == ["gate", "prefetched 0", "prefetched 1"], 60)
    for message in waiting:
        output = worker.wait_for_output(f"Task tasks.test_record_default[{message.id}] received", 30)
        assert f"/ForkPoolWorker-1] Task tasks.test_record_default[{message.id}] received" not in output
    assert "Gave back" not in worker.output()  # the child gave them back itself, not its supervisor


def _cold_shutdown_during_a_task(worker, redis_client):
    """Start a task that never ends on its own, then SIGTERM twice (warm, then cold); returns the task."""
    worker.wait_ready()
    sent = test_actors.test_gate.delay("test:never")
    wait_for(lambda: _order(redis_client) == ["gate"], 60)
    worker.signal(signal.SIGTERM)
    worker.wait_for_output("worker: Warm shutdown (MainProcess)", 30)
    worker.signal(signal.SIGTERM)
    assert worker.wait() != 0
    return sent


def test_a_second_sigterm_gives_the_running_tasks_message_back_to_its_queue(celery_worker, redis_client):
    worker = celery_worker("worker -l info -c 1 --time-limit=60 --soft-time-limit=50 -Q default",
                           split_stderr=True)
    sent = _cold_shutdown_during_a_task(worker, redis_client)
    # Both lines on stdout between newlines, as Celery's safe_say writes them
    assert "\nworker: Warm shutdown (MainProcess)\n" in worker.stdout()
    assert "\nworker: Cold shutdown (MainProcess)\n" in worker.stdout()
    assert "shutdown (MainProcess)" not in worker.stderr()

    waiting = redis_client.lrange("celery", 0, -1)
    assert len(waiting) == 1 and sent.id.encode() in waiting[0]
    assert list(redis_client.scan_iter(keys.inflight_key("default", "*"))) == []


def test_under_solo_a_cold_shutdown_leaves_no_message_where_no_sweep_finds_it(celery_worker, redis_client,
                                                                             make_broker):
    # Given a solo node in a task (its consumer blocked in a fetch on the empty queue)
    worker = celery_worker("worker -l info -P solo --time-limit=60 --soft-time-limit=50 -Q default")
    # When a cold shutdown gives its message back while that fetch may still take it again
    sent = _cold_shutdown_during_a_task(worker, redis_client)

    # Then the message is back in its queue, at once or at the next sweep of any worker
    sweeper = make_broker(heartbeat_timeout_ms=1000)

    def back_in_queue():
        sweeper.sweep()
        return redis_client.llen("celery") == 1
    wait_for(back_in_queue, 10)
    assert sent.id.encode() in redis_client.lindex("celery", 0)
    assert all(redis_client.llen(k) == 0 for k in redis_client.scan_iter(keys.inflight_key("default", "*")))


def test_under_solo_the_shutdown_lines_go_to_stdout_as_in_celery(celery_worker, redis_client):
    worker = celery_worker("worker -l info -P solo -Q default", split_stderr=True)
    worker.wait_ready()

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert "\nworker: Warm shutdown (MainProcess)\n" in worker.stdout()
    assert "shutdown (MainProcess)" not in worker.stderr()


def test_the_pidfile_is_written_held_and_removed(celery_worker, tmp_path):
    pidfile = tmp_path / "worker.pid"
    worker = celery_worker(["worker", "-P", "solo", "--pidfile", str(pidfile)])
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(worker.pid), 60)

    second = run_celery("-A", "tasks", "worker", "-P", "solo", "--pidfile", str(pidfile), env=TEST_ACTORS)
    assert second.returncode == 73
    assert second.stderr.endswith(f"ERROR: Pidfile ({pidfile}) already exists.\n"
                                  f"Seems we're already running? (pid: {worker.pid})\n")

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert not pidfile.exists()


def test_the_pidfile_expands_celerys_node_codes(celery_worker, tmp_path):
    # As Celery's node_format: %n is the node's name part, %h its host part, %i the main process's 0
    worker = celery_worker(["worker", "-P", "solo", "-n", "w1@%h", "--pidfile", str(tmp_path / "%n-%h-%i.pid")])
    pidfile = tmp_path / f"w1-{socket.gethostname()}-0.pid"
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(worker.pid), 60)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert not pidfile.exists()


def test_the_logfile_expands_celerys_codes(celery_worker, tmp_path):
    pattern = str(tmp_path / "%n%I.log")
    worker = celery_worker(["worker", "-l", "info", "-c", "1", "-f", pattern])
    # %n is the node's name part (the default node is celery@HOST), as Celery's node_format
    main_log, child_log = tmp_path / "celery.log", tmp_path / "celery-1.log"
    wait_for(lambda: main_log.exists() and " ready." in main_log.read_text(), 120)
    sent = test_actors.test_record_default.delay("logged")
    wait_for(lambda: child_log.exists() and f"test_record_default[{sent.id}] succeeded" in child_log.read_text(), 60)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


@pytest.mark.parametrize(("args", "named"), [
    (["--autoscale=10,3"], "--autoscale"),
    (["-B"], "-B"),
    (["--beat"], "--beat"),
    (["-D"], "-D"),
    (["--uid", "nobody"], "--uid"),
    (["--purge"], "--purge"),
    (["-S", "state.db"], "-S"),
    (["-P", "gevent"], "gevent"),
    (["-P", "eventlet"], "eventlet"),
    (["-P", "bogus"], "bogus"),
    (["-Q", "default,nope"], "nope"),
    (["-l", "loud"], "loud"),
    (["-c", "0"], "concurrency"),
    (["--time-limit=5", "--soft-time-limit=5"], "--soft-time-limit"),
    (["--soft-time-limit=400"], "--soft-time-limit"),
    (["--max-tasks"], "--max-tasks"),
    (["--no-such-option"], "--no-such-option"),
])
def test_a_bad_or_unoffered_option_exits_2_naming_it(args, named):
    result = run_celery("-A", "tasks", "worker", *args, env=TEST_ACTORS)
    assert result.returncode == 2, result
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and named in error_lines[0], result.stderr


def test_the_app_option_after_worker_is_refused_as_in_celery_5():
    result = run_celery("worker", "-A", "tasks", env=TEST_ACTORS)
    assert result.returncode == 2
    assert "-A' as a global option: celery -A tasks worker" in result.stderr


def test_a_child_that_keeps_dying_is_restarted_with_a_growing_delay(celery_worker, redis_client):
    worker = celery_worker("worker -l info -c 1 -Q default",
                           WORKER_EXTRA_MODULES="tests.support.extra_actors,tests.support.crashing_child")
    output = worker.wait_for_output("keeps failing (4 times in a row): starting it again in 4s", 120)
    # One start per announced delay: the supervisor does not spin
    assert output.count("exited with 'exitcode 3'") == 4
    assert "keeps failing (3 times in a row): starting it again in 2s" in output
    # A node none of whose children serves is not counted as live, nor says it is ready
    assert registry.live_nodes(redis_client) == []
    assert " ready." not in output
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_a_child_that_dies_in_a_task_is_replaced_and_the_message_retried(celery_worker, redis_client):
    worker = celery_worker("worker -l info -c 1 -Q default")
    worker.wait_ready()
    sent = test_actors.test_kill_own_process.delay("dies")

    output = worker.wait_for_output(
        f"Task tasks.test_kill_own_process[{sent.id}] retry: Retry in 5s: WorkerLostError", 60)
    assert "Process 'ForkPoolWorker-1' pid:" in output and "exited with 'exitcode 9'" in output
    # The replacement runs the retry
    wait_for(lambda: redis_client.llen("test:killed") == 2, 60)
    worker.wait_for_output("retry: Retry in 10s: WorkerLostError", 60)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert redis_client.zcard(keys.delayed_key("default")) == 1


def test_max_memory_per_child_replaces_the_child_after_its_task(celery_worker, redis_client):
    # 1 KiB: every child is above it after its first task
    worker = celery_worker("worker -l info -c 1 --max-memory-per-child=1 --prefetch-multiplier=1 -Q default")
    worker.wait_ready()
    first = test_actors.test_record_default.delay("first")
    output = worker.wait_for_output("(max memory per child exceeded (", 60)
    assert f"INFO/ForkPoolWorker-1] Task tasks.test_record_default[{first.id}] succeeded in " in output
    second = test_actors.test_record_default.delay("second")
    worker.wait_for_output(f"INFO/ForkPoolWorker-2] Task tasks.test_record_default[{second.id}] succeeded in ", 90)
    assert _order(redis_client) == ["first", "second"]
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_the_threads_pool_runs_tasks_side_by_side_in_one_process(celery_worker, redis_client):
    worker = celery_worker("worker -l info -P threads -c 2 -Q default")
    worker.wait_ready()
    sent = [test_actors.test_gate.delay("test:release-gate") for _ in range(2)]
    wait_for(lambda: _order(redis_client) == ["gate", "gate"], 60)
    # (the registry shows them at the next beat)
    nodes = wait_for(lambda: (lambda found: found if found and len(found[0].active) == 2 else None)(
        registry.live_nodes(redis_client)))
    assert [n.info["pool"] for n in nodes] == ["threads"]
    assert list(nodes[0].processes) == [str(worker.pid)]
    assert sorted(t["id"] for t in nodes[0].active) == sorted(s.id for s in sent)
    assert all(t["worker_pid"] == worker.pid and t["acknowledged"] for t in nodes[0].active)
    redis_client.set("test:release-gate", 1)
    for s in sent:
        worker.wait_for_output(f"Task tasks.test_gate[{s.id}] succeeded in ", 60)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_the_broker_password_is_masked_in_the_banner_and_log(celery_worker, tmp_path):
    server = PrivateRedis(tmp_path, password="s3cret-pass")
    try:
        worker = celery_worker(["-b", server.url, "worker", "-l", "info", "-P", "solo"])
        output = worker.wait_for_output(" ready.")
        shown = f"redis://:**@127.0.0.1:{server.port}/0"
        assert f".> transport:   {shown}" in output
        assert f"Connected to {shown}" in output
        client = redis.Redis.from_url(server.url)
        nodes = wait_for(lambda: registry.live_nodes(client))
        assert [n.info["broker"] for n in nodes] == [shown]
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
        assert "s3cret-pass" not in worker.output()
    finally:
        server.stop()


def test_a_worker_started_before_redis_waits_for_it(celery_worker, tmp_path):
    server = PrivateRedis(tmp_path, password="pw")
    server.stop()
    try:
        worker = celery_worker(["-b", server.url, "worker", "-l", "info", "-P", "solo"])
        output = worker.wait_for_output("Trying again in")
        assert f"consumer: Cannot connect to redis://:**@127.0.0.1:{server.port}/0: " in output
        assert " ready." not in output and worker.proc.poll() is None
        server.start()
        worker.wait_ready()
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    finally:
        server.stop()


def test_a_sigterm_before_the_worker_is_ready_is_a_warm_shutdown(celery_worker, tmp_path):
    # Given a worker that wrote its pidfile and waits for a Redis that is not there
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    pidfile = tmp_path / "early.pid"
    worker = celery_worker(["-b", nowhere, "worker", "-l", "info", "-P", "solo", "--pidfile", str(pidfile)])
    worker.wait_for_output("Trying again in")
    assert pidfile.read_text().strip() == str(worker.pid)

    # When it is told to stop before it ever connected
    worker.signal(signal.SIGTERM)

    # Then it stops as after any SIGTERM: exit 0, Celery's line, no stale pidfile
    assert worker.wait(30) == 0
    assert "worker: Warm shutdown (MainProcess)" in worker.output()
    assert not pidfile.exists()


def test_a_child_whose_task_holds_the_gil_is_not_swept(celery_worker, redis_client):
    # Given a prefork node of two children and a short heartbeat timeout
    # (a process silent for 1 s is swept)
    worker = celery_worker("worker -l info -P prefork -c 2", HEARTBEAT_TIMEOUT_SECONDS="2")
    worker.wait_ready()

    # When a task holds its child's GIL for longer than that (its upkeep thread cannot beat)
    test_actors.test_hold_gil.delay("gil", 6)

    # Then its message stays with it: the other child never runs it too
    wait_for(lambda: redis_client.llen("test:gil-done") == 1, 60)
    assert redis_client.llen("test:gil-started") == 1, redis_client.lrange("test:gil-started", 0, -1)
    assert redis_client.llen("celery") == 0


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_task_still_running_after_the_shutdown_timeout_goes_back_to_its_queue(celery_worker, redis_client, pool):
    # Given a node whose hard limit (2 s) gives a warm shutdown 10 s, running a task sent
    # with a longer limit of its own, which it is allowed to use
    worker = celery_worker(f"worker -l info -P {pool} -c 1 --time-limit=2 --soft-time-limit=1")
    worker.wait_ready()
    test_actors.test_gate.apply_async(args=("gate:never", 40), time_limit=60, soft_time_limit=50)
    wait_for(lambda: redis_client.llen("test:order") == 1, 60)

    # When the node is told to stop
    worker.signal(signal.SIGTERM)

    # Then after the shutdown timeout the node leaves at once, and the task's message waits
    # in its queue for another worker (the task did not finish: it is not acknowledged)
    assert worker.wait(60) == 0
    assert "Tasks still running after the shutdown timeout (10s): their messages go back to their queue." \
        in worker.output()
    assert redis_client.llen("celery") == 1
    assert all(redis_client.llen(k) == 0 for k in redis_client.scan_iter(keys.inflight_key("default", "*")))
