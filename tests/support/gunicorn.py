"""``gunicorn wsgi:app`` with the project's settings as a real subprocess, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.redis_server import free_port
from tests.support.waiting import wait_for

__all__ = ["Gunicorn", "ROOT"]

ROOT = Path(__file__).resolve().parents[2]


class Gunicorn:
    """``gunicorn wsgi:app -c python:app.web.gunicorn_conf`` on a free loopback port.

    Use as a context manager: entering waits until ``GET /`` answers,
    leaving sends SIGTERM and waits for the master (killing its session
    if it does not end).  ``http`` is a client on its port and
    ``error_log`` gunicorn's log file.
    """

    def __init__(self, *options: str, env: dict[str, str], logs: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.error_log = logs / "error.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "python:app.web.gunicorn_conf",
             "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), "--error-logfile", str(self.error_log),
             *options],
            cwd=ROOT, env=env, start_new_session=True)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def _answers(self) -> bool:
        assert self.proc.poll() is None, self.error_log.read_text() if self.error_log.exists() else "no log"
        try:
            return self.http.get("/").status_code == 200
        except httpx.TransportError:
            return False

    def __enter__(self) -> Gunicorn:
        try:
            wait_for(self._answers, timeout_s=60, interval_s=0.1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
