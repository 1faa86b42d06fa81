"""``celery -A tasks flower`` as a real process, next to a real worker node."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.support import extra_actors as test_actors
from tests.support.cli import run_celery
from tests.support.monitor import start_monitor
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

OPEN_API = {"FLOWER_UNAUTHENTICATED_API": "true"}


@pytest.mark.parametrize("args, message", [
    (["--port=http"], "argument --port: 'http' is not a port number"),
    (["--port=70000"], "argument --port: 70000 is not a port number (0-65535)"),
    (["--basic-auth=admin"], "--basic-auth expects user:password"),
    (["--url-prefix=a b"], "--url-prefix must be a plain path"),
    (["-l", "chatty"], "'chatty' is not one of DEBUG"),
    (["--persistent=True"], "'celery flower --persistent' is a Celery option this project does not offer"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_options_exit_2_with_a_clear_message(args, message):
    result = run_celery("-A", "tasks", "flower", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        result = run_celery("-A", "tasks", "flower", f"--port={taken.getsockname()[1]}")
    assert result.returncode == 1 and "cannot listen on 127.0.0.1:" in result.stderr


def test_starts_with_flowers_lines_and_stops_cleanly_on_sigterm(celery_worker, redis_url):
    monitor = start_monitor(celery_worker)
    output = monitor.process.output()
    assert "Visit me at http://127.0.0.1:" in output
    assert f"Broker: {redis_url}" in output
    assert "Registered tasks: \n['tasks.check_buffer_task', " in output
    assert monitor.get("/healthcheck").text == "OK"
    monitor.process.signal(signal.SIGTERM)
    assert monitor.process.wait() == 0
    assert "Monitor stopped." in monitor.process.output()


def test_a_dead_letter_retried_from_the_monitor_runs_again_and_history_survives_a_restart(celery_worker,
                                                                                       redis_client):
    # Given a worker node and the monitor
    worker = celery_worker("worker -l info -P solo -n mon@%h")
    monitor = start_monitor(celery_worker, **OPEN_API)
    worker.wait_ready()

    # When a task fails for good (not a transient error: no retries)
    message = test_actors.test_fail_unless.send("first", "test:allow")
    wait_for(lambda: redis_client.zcard("dramatiq:default.dead") == 1)

    # Then the monitor's history shows the failure with its error
    def state(mon):
        return mon.get(f"/api/task/info/{message.message_id}").json.get("state")

    wait_for(lambda: monitor.get(f"/api/task/info/{message.message_id}").status == 200 and state(monitor) == "FAILURE")
    info = monitor.get(f"/api/task/info/{message.message_id}").json
    assert info["exception"] == "ValueError('test:allow is not set')" and info["worker"].startswith("mon@")

    # And after a monitor restart the history is still there (it lives in Redis)
    monitor.process.signal(signal.SIGTERM)
    assert monitor.process.wait() == 0
    monitor = start_monitor(celery_worker, **OPEN_API)
    assert state(monitor) == "FAILURE"

    # When the dead letter is retried from the monitor, with the cause fixed
    redis_client.set("test:allow", 1)
    answer = monitor.post(f"/broker/dead/default/{message.message_id}/retry", headers={"X-Monitor-Action": "1"})
    assert answer.status == 200 and answer.json["ok"] is True

    # Then the task runs again and succeeds
    wait_for(lambda: redis_client.lrange("test:done", 0, -1) == [b"first"])
    assert redis_client.lrange("test:runs", 0, -1) == [b"first", b"first"]
    wait_for(lambda: state(monitor) == "SUCCESS")
    assert redis_client.zcard("dramatiq:default.dead") == 0


def test_basic_auth_and_url_prefix_on_the_real_server(celery_worker):
    worker = celery_worker("worker -l info -P solo -n authed@%h")
    monitor = start_monitor(celery_worker, "--basic_auth=admin:pw1", "--basic-auth=ops:pw2,viewer:pw3",
                            "--url_prefix=/flower/")
    assert monitor.url.endswith("/flower")
    worker.wait_ready()
    refused = monitor.get("/api/workers")
    assert refused.status == 401 and refused.headers["www-authenticate"] == 'Basic realm="flower"'
    assert monitor.get("/api/workers", auth=("admin", "nope")).status == 401
    for user, password in (("admin", "pw1"), ("ops", "pw2"), ("viewer", "pw3")):
        workers = wait_for(lambda u=user, p=password: monitor.get("/api/workers?status=1", auth=(u, p)).json)
        assert list(workers) == [f"authed@{socket.gethostname()}"]
    assert monitor.get("/healthcheck").text == "OK"
    assert "flower_worker_online" in monitor.get("/metrics").text
    page = monitor.get("/workers", auth=("admin", "pw1"))
    assert 'href="/flower/broker"' in page.text and "authed@" in page.text


def test_basic_auth_from_flower_basic_auth_when_no_option_names_it(celery_worker):
    monitor = start_monitor(celery_worker, FLOWER_BASIC_AUTH="admin:envpw,ops:other")
    assert monitor.get("/api/workers").status == 401
    assert monitor.get("/workers").status == 401
    assert monitor.get("/api/workers", auth=("admin", "envpw")).status == 200
    assert monitor.get("/api/workers", auth=("ops", "other")).status == 200
    # DNS rebinding: the attacker's host name in Host is refused, even with credentials
    assert monitor.get("/workers", auth=("admin", "envpw"), headers={"Host": "evil.example"}).status == 400
    assert b"envpw" not in Path(f"/proc/{monitor.process.pid}/cmdline").read_bytes()


def test_a_task_whose_process_died_shows_as_retried_with_the_reason(celery_worker, redis_client):
    # Given a prefork node and the monitor
    worker = celery_worker("worker -l info -P prefork -c 1 -n prefork@%h")
    monitor = start_monitor(celery_worker, **OPEN_API)
    worker.wait_ready()

    # A child's own history reaches Redis (its flusher runs in the child)
    ok = test_actors.test_record_default.send("fine")
    wait_for(lambda: monitor.get(f"/api/task/info/{ok.message_id}").json.get("state") == "SUCCESS", timeout_s=60)
    assert monitor.get(f"/api/task/info/{ok.message_id}").json["worker"].startswith("prefork@")

    # When a task ends its own process without a word (as an out-of-memory kill would)
    message = test_actors.test_kill_own_process.send("oom")

    # Then the supervisor's retry decision is in the history, not a task forever "STARTED" (for a
    # moment before that, the retry's place in the delayed set shows it as RETRY with no reason yet)
    def info():
        answer = monitor.get(f"/api/task/info/{message.message_id}")
        return answer.status == 200 and answer.json["state"] == "RETRY" and answer.json["exception"] and answer.json

    found = wait_for(info, timeout_s=60)
    assert "Worker exited prematurely" in found["exception"] and found["retries"] == 1
