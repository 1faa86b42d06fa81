"""The settings, the JSON log format and the metrics directory of worker nodes, in one process."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from actors.middleware.task_log import RunningTask, TaskContextFilter, current_task
from actors.worker_logging import JsonFormatter
from actors.worker_metrics import node_dir, prepare_dir
from app.config import Config
from app.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_worker_metrics_and_log_format_default_to_port_9191_and_text():
    config = Config.from_env({})
    assert config.worker_metrics_port == 9191 and config.worker_metrics_host == "0.0.0.0"
    assert config.log_format == "text"
    config = Config.from_env({"WORKER_METRICS_PORT": "0", "LOG_FORMAT": "JSON", "WORKER_METRICS_DIR": "/srv/m"})
    assert (config.worker_metrics_port, config.log_format) == (0, "json")
    assert str(node_dir(config)) == "/srv/m/0_0_0_0-0"


@pytest.mark.parametrize(("env", "message"), [
    ({"WORKER_METRICS_PORT": "http"}, "WORKER_METRICS_PORT must be a whole number"),
    ({"WORKER_METRICS_PORT": "-1"}, "WORKER_METRICS_PORT must be at least 0"),
    ({"WORKER_METRICS_PORT": "70000"}, "WORKER_METRICS_PORT must be a port number"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of text, json, got 'xml'"),
])
def test_bad_metrics_and_log_settings_are_refused_with_their_name(env, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env)


def _record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    record = logging.LogRecord("celery.app.trace", logging.INFO, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    TaskContextFilter().filter(record)
    return record


def test_a_json_line_carries_the_running_tasks_fields():
    # Given a thread running a task
    token = current_task.set(RunningTask("process_message_task", "id-1", "default", 0.0))
    try:
        # When a line is logged inside it, and the finish line with its outcome
        inside = json.loads(JsonFormatter().format(_record("talking to %s", "Gemini")))
        finish = json.loads(JsonFormatter().format(_record("done", outcome="retried", duration_s=1.5)))
    finally:
        current_task.reset(token)

    # Then both are one JSON object with the task's fields
    assert inside["message"] == "talking to Gemini" and inside["level"] == "INFO"
    assert (inside["task_name"], inside["task_id"], inside["queue"]) == ("process_message_task", "id-1", "default")
    assert inside["outcome"] is None and inside["process"] == "MainProcess"
    assert inside["timestamp"].endswith("Z") and "T" in inside["timestamp"]
    assert (finish["outcome"], finish["duration_s"]) == ("retried", 1.5)


def test_a_json_line_outside_tasks_has_null_task_fields_and_keeps_its_traceback():
    try:
        raise ValueError("bad")
    except ValueError:
        record = _record("it broke", exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    document = json.loads(line)
    assert "\n" not in line
    assert document["task_name"] is None and document["duration_s"] is None
    assert "ValueError: bad" in document["exc_info"]


def test_only_the_first_claim_of_a_metrics_directory_wipes_it(tmp_path):
    # Given files an earlier invocation with the same main pid left
    path = tmp_path / "dramatiq-1"
    path.mkdir()
    (path / "counter_7.db").write_bytes(b"old")
    (path / ".owner").write_text("1 100")

    # When this invocation's first process claims it, they go
    assert prepare_dir(path, "1 200") is True
    assert [p.name for p in path.iterdir()] == [".owner"]

    # And its sibling's claim keeps what the first one wrote since
    (path / "counter_8.db").write_bytes(b"new")
    assert prepare_dir(path, "1 200") is False
    assert (path / "counter_8.db").read_bytes() == b"new"


def test_metrics_are_file_backed_even_when_prometheus_client_was_imported_first(tmp_path):
    # Given a process that imported prometheus_client before its node's directory was known
    # (in memory mode), as a module of the web app imported alongside the actors might
    script = f"""
import prometheus_client
import prometheus_client.multiprocess
import actors
from actors.middleware import TaskMetrics, find
from actors.worker_metrics import claim_plain_cli_dir
from app.config import Config
import dataclasses
config = dataclasses.replace(Config.from_env(), worker_metrics_dir={str(tmp_path)!r})
path = claim_plain_cli_dir(config, 4242)
metrics = find(actors.broker, TaskMetrics)
metrics.enable(str(path))
metrics.count_outcome("process_message_task", "failed")
registry = prometheus_client.CollectorRegistry()
prometheus_client.multiprocess.MultiProcessCollector(registry, path=str(path))
print(registry.get_sample_value("assistant_tasks_failed_total", {{"task": "process_message_task"}}))
"""
    # When it records a task's failure into the directory
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)

    # Then the node's collector sees it
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.0"


def test_directories_of_dramatiq_runs_that_are_gone_are_swept(tmp_path):
    import fcntl

    from actors.worker_metrics import _main_identity, sweep_plain_cli_dirs

    # Given the directory of a run whose main process exited, one of a live run, and one being claimed now
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale, live, busy = (tmp_path / f"dramatiq-{pid}" for pid in (gone.pid, 1, 2))
    for path, owner in ((stale, f"{gone.pid} 12345"), (live, _main_identity(1)), (busy, "2 1")):
        path.mkdir()
        (path / "counter_9.db").write_bytes(b"x")
        (path / ".owner").write_text(owner)
        (tmp_path / f"{path.name}.lock").touch()
    with open(tmp_path / f"{busy.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)

        # When a new run sweeps
        removed = sweep_plain_cli_dirs(tmp_path)

    # Then only the gone run's directory and lock are removed
    assert removed == [stale]
    assert not stale.exists() and not (tmp_path / f"{stale.name}.lock").exists()
    assert (live / "counter_9.db").exists() and (busy / "counter_9.db").exists()


def test_a_node_whose_metrics_directory_cannot_be_made_runs_without_metrics(tmp_path, caplog):
    import dataclasses
    import socket

    from actors.worker_metrics import open_exposition
    from tests.support.metrics import free_port

    # Given WORKER_METRICS_DIR below a file
    (tmp_path / "file").write_text("not a directory")
    port = free_port()
    config = dataclasses.replace(Config.from_env({}), worker_metrics_port=port, worker_metrics_host="127.0.0.1",
                                 worker_metrics_dir=str(tmp_path / "file" / "metrics"))

    # When the node opens its exposition, it says so once, naming the setting, and gets none
    with caplog.at_level(logging.ERROR):
        assert open_exposition(config) is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "WORKER_METRICS_DIR" in errors[0], errors

    # And the port is free again
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))


def test_dramatiq_processes_stop_recording_when_nobody_serves_their_metrics(tmp_path):
    # Given a plain dramatiq run whose exposition finds its port taken
    script = f"""
import os, socket, types
from pathlib import Path
taken = socket.socket(); taken.bind(("127.0.0.1", 0)); taken.listen(1)
from app.config import set_environment
set_environment(WORKER_METRICS_PORT=str(taken.getsockname()[1]), WORKER_METRICS_HOST="127.0.0.1",
                WORKER_METRICS_DIR={str(tmp_path)!r})
from actors.worker_metrics import plain_cli_exposition, UNSERVED, plain_cli_dir
from app.config import Config
assert plain_cli_exposition() == 0
path = plain_cli_dir(Config.from_env(), os.getppid())
print((path / UNSERVED).exists())
# When a worker process of that run (whose parent is the same main process) handles a task
import actors
from actors.middleware import TaskMetrics, find
metrics = find(actors.broker, TaskMetrics)
metrics.config = Config.from_env()
metrics.after_process_boot(actors.broker)
print(metrics.enabled)
message = types.SimpleNamespace(actor_name="process_message_task", message_id="m1", queue_name="default")
metrics.before_process_message(actors.broker, message)
print(metrics.enabled, sorted(p.name for p in path.iterdir() if p.name.endswith(".db")))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)

    # Then its metrics turn off before it records anything
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["True", "True", "False []"], result.stdout
    assert "Cannot serve the worker metrics on port" in result.stderr


def test_the_exposition_binds_without_a_dns_lookup_and_drops_silent_clients(monkeypatch):
    import socket
    import threading
    import urllib.error
    import urllib.request

    from actors import worker_metrics

    # Given a host whose name cannot be looked up in DNS
    def no_dns(*args):
        raise AssertionError("socket.getfqdn called")

    monkeypatch.setattr(socket, "getfqdn", no_dns)

    # When the exposition's server binds, it does not ask
    server = worker_metrics._Server(("127.0.0.1", 0), worker_metrics._Handler)
    server.path = None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert (server.server_name, server.server_port) == ("127.0.0.1", port)

        # And a client that connects and says nothing is dropped after the handler's timeout
        assert worker_metrics._Handler.timeout == 10
        with socket.create_connection(("127.0.0.1", port), timeout=60) as silent:
            assert silent.recv(1) == b""
        # (and the server serves on)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=10)
        assert refused.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_a_json_line_with_a_lone_surrogate_still_reaches_a_utf8_log_file(tmp_path):
    # Given a UTF-8 log file in the JSON format
    handler = logging.FileHandler(tmp_path / "w.log", encoding="utf-8")
    handler.setFormatter(JsonFormatter())

    # When a line carries text with a lone surrogate (e.g. a filename decoded with surrogateescape)
    handler.emit(_record("bad byte %s", "caf\udce9"))
    handler.close()

    # Then the line is written, escaped, and reads back as the same text
    lines = (tmp_path / "w.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["message"] == "bad byte caf\udce9"


def test_the_files_of_reaped_processes_fold_into_the_archive_and_the_counts_stay(tmp_path):
    import os

    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from actors.worker_metrics import fold_dead_process

    # Given five processes that each counted a task and timed it, then exited
    script = """
import os
from prometheus_client import Counter, Gauge, Histogram
Counter("t_runs", "runs", ["task"], registry=None).labels("x").inc(2)
Histogram("t_seconds", "time", ["task"], registry=None, buckets=(1.0,)).labels("x").observe(0.5)
Gauge("t_busy", "busy", ["task"], registry=None, multiprocess_mode="livesum").labels("x").inc()
print(os.getpid())
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pids = [int(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                               check=True, timeout=60).stdout) for _ in range(5)]

    # When the supervisor reaps them one after the other
    for pid in pids:
        fold_dead_process(tmp_path, pid)

    # Then only the archive files are left, and they hold every count
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_archived.db", "histogram_archived.db"]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("t_runs_total", {"task": "x"}) == 10
    assert registry.get_sample_value("t_seconds_count", {"task": "x"}) == 5
    assert registry.get_sample_value("t_seconds_bucket", {"task": "x", "le": "1.0"}) == 5
    assert registry.get_sample_value("t_seconds_sum", {"task": "x"}) == 2.5
    assert registry.get_sample_value("t_busy", {"task": "x"}) is None
