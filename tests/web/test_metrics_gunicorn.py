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
from pathlib import Path

import httpx
import pytest

from tests.support.fixtures import APP_SECRET, sign, text_body
from tests.support.gunicorn import Gunicorn
from tests.support.prometheus import Samples, samples_of
from tests.support.waiting import wait_for

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


def counted(http: httpx.Client) -> Samples:
    result = http.get("/metrics")
    assert result.status_code == 200
    return samples_of(result.text)


def test_webhooks_served_by_both_gunicorn_workers_are_all_counted(redis_client, redis_url, engine, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {
        "REDIS_URI": redis_url, "WHATSAPP_APP_SECRET": APP_SECRET, "BUFFER_WINDOW_SECONDS": "60"}
    access_log = tmp_path / "access.log"
    posted = 0
    with Gunicorn("--timeout", "60", "--log-level", "info", "--access-logfile", str(access_log),
                  "--access-logformat", "%(p)s %(m)s %(U)s %(s)s", env=env, logs=tmp_path) as web:
        http, port, error_log = web.http, web.port, web.error_log

        def post_webhook() -> None:
            nonlocal posted
            posted += 1
            body = text_body(f"wamid.gunicorn-{posted}", f"message {posted}", wa_id=f"1650555{posted:04d}")
            assert http.post("/webhook", content=body, headers={"X-Hub-Signature-256": sign(body)}).status_code == 200

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
    # The master removes the directory it made
    assert not Path(metrics_dir).exists()


def test_masters_sharing_web_metrics_dir_keep_their_own_counts_and_a_gone_masters_are_removed(
        redis_client, redis_url, engine, tmp_path):
    # Given WEB_METRICS_DIR holding the counts of a master that is gone, of one that runs (this test's
    # process stands in for it) and a file of someone else's, and a PROMETHEUS_MULTIPROC_DIR inherited
    # from the environment (a worker node's)
    web_dir, inherited = tmp_path / "web-metrics", tmp_path / "worker-metrics"
    inherited.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    for pid in (gone.pid, os.getpid()):
        (web_dir / str(pid)).mkdir(parents=True)
        (web_dir / str(pid) / "counter_999999.db").write_bytes(b"counts")
    (web_dir / "README").write_text("not prometheus_client's")
    env = os.environ | {"REDIS_URI": redis_url, "WHATSAPP_APP_SECRET": APP_SECRET, "BUFFER_WINDOW_SECONDS": "60",
                        "WEB_METRICS_DIR": str(web_dir), "PROMETHEUS_MULTIPROC_DIR": str(inherited)}
    with Gunicorn(env=env, logs=tmp_path) as web:
        # When one webhook is posted
        body = text_body("wamid.dir-1", "hello")
        assert web.http.post("/webhook", content=body,
                             headers={"X-Hub-Signature-256": sign(body)}).status_code == 200

        # Then the count is one, kept in this master's own subdirectory only
        samples = counted(web.http)
        assert samples[("assistant_webhook_requests_total", frozenset({("outcome", "accepted")}))] == 1
        own = web_dir / str(web.proc.pid)
        assert any(p.name.startswith("counter_") for p in own.iterdir())
        # the gone master's counts are removed, the running one's and the foreign file are left alone
        assert {p.name for p in web_dir.iterdir()} == {str(web.proc.pid), str(os.getpid()), "README"}
        assert (web_dir / str(os.getpid()) / "counter_999999.db").read_bytes() == b"counts"
        assert list(inherited.iterdir()) == []
    # At exit the master removes its subdirectory and nothing else
    assert {p.name for p in web_dir.iterdir()} == {str(os.getpid()), "README"}
