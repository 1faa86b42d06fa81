"""``/metrics`` under a real gunicorn with two workers: every worker's requests are counted.

prometheus_client's multiprocess mode sums the files of all workers, so a
scrape answered by either worker shows the requests both served.  To be
sure both served some, a connection that sends half a request keeps one
sync worker busy while the other takes the posts, and then the other way
round; the access log names the process that served each request.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fixtures import APP_SECRET, sign, text_body
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


class _HalfRequest:
    """A webhook POST whose headers are sent in two parts: the sync worker that
    accepted it is busy until the second part comes."""

    def __init__(self, port: int, body: bytes) -> None:
        self.body = body
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    def finish(self) -> int:
        head = (f"Content-Type: application/json\r\nX-Hub-Signature-256: {sign(self.body)}\r\n"
                f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n").encode()
        self.sock.sendall(head + self.body)
        answer = b""
        while chunk := self.sock.recv(65536):
            answer += chunk
        self.sock.close()
        return int(answer.split(b" ", 2)[1])


def counted(http: httpx.Client) -> dict[tuple[str, frozenset], float]:
    result = http.get("/metrics")
    assert result.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(result.text) for s in family.samples}


def test_webhooks_served_by_both_gunicorn_workers_are_all_counted(redis_client, redis_url, engine, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {
        "REDIS_URI": redis_url, "WHATSAPP_APP_SECRET": APP_SECRET, "BUFFER_WINDOW_SECONDS": "60"}
    access_log, error_log = tmp_path / "access.log", tmp_path / "error.log"
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "python:app.web.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "--timeout", "60", "--log-level", "info",
         "--access-logfile", str(access_log), "--access-logformat", "%(p)s %(m)s %(U)s %(s)s",
         "--error-logfile", str(error_log)],
        cwd=ROOT, env=env, start_new_session=True)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    posted = 0

    def post_webhook() -> None:
        nonlocal posted
        posted += 1
        body = text_body(f"wamid.gunicorn-{posted}", f"message {posted}", wa_id=f"1650555{posted:04d}")
        assert http.post("/webhook", content=body, headers={"X-Hub-Signature-256": sign(body)}).status_code == 200

    def answers() -> bool:
        assert web.poll() is None, error_log.read_text()
        try:
            return http.get("/").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, timeout_s=60, interval_s=0.1)
        metrics_dir = re.search(r"Web metrics of all workers are kept in (\S+)\.", error_log.read_text()).group(1)
        assert Path(metrics_dir).is_dir()

        # Given one worker held by a half-sent request, the other serves five posts
        first = _HalfRequest(port, text_body("wamid.gunicorn-a", "held a", wa_id="16505559998"))
        for _ in range(5):
            post_webhook()
        # then that one is held, and the first worker, let go, serves five more
        second = _HalfRequest(port, text_body("wamid.gunicorn-b", "held b", wa_id="16505559999"))
        assert first.finish() == 200
        for _ in range(5):
            post_webhook()
        assert second.finish() == 200
        total = posted + 2

        # Then the posts were served by two processes
        def served_by() -> set[str]:
            return set(re.findall(r"^<(\d+)> POST /webhook 200$", access_log.read_text(), re.MULTILINE))

        pids = wait_for(lambda: len(re.findall("POST /webhook", access_log.read_text())) == total and served_by())
        assert len(pids) == 2
        # and every scrape, whichever worker answers it, counts them all
        for _ in range(6):
            samples = counted(http)
            assert samples[("assistant_webhook_requests_total", frozenset({("outcome", "accepted")}))] == total
            assert samples[("assistant_tasks_enqueued_total", frozenset({("task", "check_buffer_task")}))] == total
            assert samples[("assistant_webhook_request_duration_seconds_count", frozenset())] == total
            assert samples[("assistant_redis_up", frozenset())] == 1

        # When a worker dies and gunicorn replaces it, its counts are still in the sum
        def booted() -> set[str]:
            return set(re.findall(r"Booting worker with pid: (\d+)", error_log.read_text()))

        assert booted() == pids
        os.kill(int(sorted(pids)[0]), signal.SIGKILL)
        wait_for(lambda: len(booted()) == 3, timeout_s=60, interval_s=0.1)
        [new_pid] = booted() - pids
        post_webhook()

        # Then every scrape counts the dead worker's requests too, also one the new worker answers
        def scraped_by_new_worker() -> bool:
            samples = counted(http)
            assert samples[("assistant_webhook_requests_total", frozenset({("outcome", "accepted")}))] == total + 1
            return f"<{new_pid}> GET /metrics" in access_log.read_text()

        wait_for(scraped_by_new_worker, timeout_s=60, interval_s=0.05)
    finally:
        http.close()
        if web.poll() is None:
            web.send_signal(signal.SIGTERM)
        try:
            web.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait()
    # The master removes the directory it made
    assert not Path(metrics_dir).exists()


def test_a_configured_web_metrics_dir_is_emptied_of_old_counts_and_an_inherited_one_is_left_alone(
        redis_client, redis_url, engine, tmp_path):
    # Given WEB_METRICS_DIR with an earlier run's counts and a file of someone else's, and a
    # PROMETHEUS_MULTIPROC_DIR inherited from the environment (a worker node's)
    web_dir, inherited = tmp_path / "web-metrics", tmp_path / "worker-metrics"
    web_dir.mkdir()
    inherited.mkdir()
    (web_dir / "counter_999999.db").write_bytes(b"stale")
    (web_dir / "README").write_text("not prometheus_client's")
    port = free_port()
    env = os.environ | {"REDIS_URI": redis_url, "WHATSAPP_APP_SECRET": APP_SECRET, "BUFFER_WINDOW_SECONDS": "60",
                        "WEB_METRICS_DIR": str(web_dir), "PROMETHEUS_MULTIPROC_DIR": str(inherited)}
    error_log = tmp_path / "error.log"
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "python:app.web.gunicorn_conf",
                            "--bind", f"127.0.0.1:{port}", "--workers", "2", "--error-logfile", str(error_log)],
                           cwd=ROOT, env=env, start_new_session=True)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        def answers() -> bool:
            assert web.poll() is None, error_log.read_text()
            try:
                return http.get("/").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, timeout_s=60, interval_s=0.1)
        # When one webhook is posted
        body = text_body("wamid.dir-1", "hello")
        assert http.post("/webhook", content=body, headers={"X-Hub-Signature-256": sign(body)}).status_code == 200

        # Then the old counts are gone, the count is one, and it is kept in the web's directory only
        samples = counted(http)
        assert samples[("assistant_webhook_requests_total", frozenset({("outcome", "accepted")}))] == 1
        names = {p.name for p in web_dir.iterdir()}
        assert "counter_999999.db" not in names and "README" in names
        assert any(n.startswith("counter_") for n in names)
        assert list(inherited.iterdir()) == []
    finally:
        http.close()
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait()
    # A directory the operator named is kept
    assert web_dir.is_dir()
