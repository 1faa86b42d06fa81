"""The README's first command: ``assistant run`` with every embedded default."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import create_engine, text

from actors.setup import build_broker
from app.config import Config
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_assistant_run_starts_redis_sqlite_web_and_a_worker_and_stops_cleanly(tmp_path):
    # Given no REDIS_URI, no DB_URL and no GOOGLE_API_KEY
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URI", "DB_URL", "GOOGLE_API_KEY")}
    port = free_port()
    env.update(DATA_DIR=str(tmp_path / "data"), WEB_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "app.manage", "run", "--threads", "2"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    broker = None
    try:
        def find(pattern):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for line in list(lines):
                    match = re.search(pattern, line)
                    if match:
                        return match
                time.sleep(0.05)
            raise AssertionError(f"{pattern!r} not in output:\n{''.join(lines)}")

        # When it is running
        redis_url = find(r"Redis: (redis://127\.0\.0\.1:\d+/0) \(private")[1]
        find(rf"Listening at: http://127\.0\.0\.1:{port}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert json.load(resp)["service"] == "whatsapp-assistant"

        # Then a task sent to its Redis is run by its worker into its SQLite database
        broker = build_broker(Config(redis_uri=redis_url))
        stub = dramatiq.actor(lambda status: None, actor_name="update_message_status_task", broker=broker)
        stub.send({"id": "wamid.main", "status": "sent", "timestamp": "3"})
        engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'assistant.sqlite3'}")
        deadline = time.monotonic() + 30
        while True:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT status FROM message_statuses WHERE wamid='wamid.main'")).all()
            if rows:
                break
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        assert rows == [("sent",)]
        engine.dispose()
    finally:
        if broker is not None:
            broker.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    # And a SIGTERM stops everything it started, cleanly
    assert code == 0, "".join(lines)
    assert "Killing worker process" not in "".join(lines)
