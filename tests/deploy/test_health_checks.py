"""The containers' health checks, run as Docker would run them, against real processes."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.deploy.files import ROOT, compose, dockerfile_instructions
from tests.support.celery_worker import START_TIMEOUT_S, CeleryWorker
from tests.support.processes import stop
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

BIN = str(Path(sys.executable).parent)


def _container_env() -> dict[str, str]:
    # Docker sets HOSTNAME to the container's host name, which socket.gethostname() returns inside.
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HOSTNAME": socket.gethostname()}


def _run_check(test: list[str], replace: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
    """A compose/Dockerfile health check's test, run the way Docker runs it."""
    kind, *rest = test
    if kind == "CMD-SHELL":
        argv = ["/bin/sh", "-c", rest[0].replace("$$", "$")]  # compose's $$ is a literal $
    else:
        assert kind == "CMD", test
        argv = rest
    if replace:
        argv = [a.replace(*replace) for a in argv]
    return subprocess.run(argv, cwd=ROOT, env=_container_env(), capture_output=True, text=True, timeout=120)


def _image_healthcheck() -> list[str]:
    rest = [r for i, r in dockerfile_instructions() if i == "HEALTHCHECK"][-1]
    return ["CMD", *json.loads(rest[rest.index("CMD") + len("CMD"):].strip())]


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the status the test set (a stand-in for /health and /healthcheck)."""

    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stand_in():
    """An HTTP server on a free port, answering _Answer.status."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    _Answer.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


# NOTE: /health itself comes with the health branch; here the check command is run
# against a stand-in that answers as /health does (200 healthy, 503 not).
@pytest.mark.parametrize(("check", "url"), [
    (lambda: _image_healthcheck(), "http://127.0.0.1:5000/health"),
    (lambda: compose()["services"]["monitor"]["healthcheck"]["test"], "http://127.0.0.1:5555/healthcheck"),
], ids=["image-web-health", "compose-monitor-healthcheck"])
def test_an_http_health_check_passes_on_200_only(check, url, stand_in):
    test = check()
    assert url in " ".join(test)
    port = url.split("/")[2].split(":")[1]
    here = (f"127.0.0.1:{port}/", f"127.0.0.1:{stand_in}/")
    _Answer.status = 200
    result = _run_check(test, here)
    assert result.returncode == 0, result.stderr
    assert _Answer.paths == ["/" + url.split("/", 3)[3]]
    # 503 (no worker alive, for /health) and nothing listening are both unhealthy
    _Answer.status = 503
    assert _run_check(test, here).returncode != 0
    assert _run_check(test, (f"127.0.0.1:{port}/", f"127.0.0.1:{free_port()}/")).returncode != 0


def test_the_compose_worker_check_pings_its_own_node(tmp_path, global_broker, redis_client):
    check = compose()["services"]["worker"]["healthcheck"]["test"]
    # No node yet: unhealthy
    assert _run_check(check).returncode != 0
    # A node with the default name (celery@<host name>), as the compose service starts it
    worker = CeleryWorker("worker -l info -P solo -Q default,state".split(), tmp_path / "worker.log")
    try:
        worker.wait_ready()
        result = _run_check(check)
        assert result.returncode == 0, result.stdout + result.stderr
        # Another node's name does not count: the check is about this container's node
        assert _run_check(check, ("celery@", "other@")).returncode != 0
    finally:
        worker.kill_all()


def test_the_dramatiq_check_names_the_node_after_the_main_pid(tmp_path, global_broker, redis_client):
    # In its container the plain CLI's main process is PID 1: the node is dramatiq.1@<host>.
    check = compose()["services"]["worker-dramatiq"]["healthcheck"]["test"]
    log = open(tmp_path / "dramatiq.log", "wb")
    proc = subprocess.Popen([f"{BIN}/dramatiq", "actors", "-p", "1", "-t", "1", "-Q", "default", "state"],
                            cwd=ROOT, env=_container_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        here = ("dramatiq.1@", f"dramatiq.{proc.pid}@")
        wait_for(lambda: _run_check(check, here).returncode == 0 or proc.poll() is not None, START_TIMEOUT_S)
        assert proc.poll() is None, (tmp_path / "dramatiq.log").read_text()
    finally:
        stop(proc)
        log.close()
    assert _run_check(check, here).returncode != 0
