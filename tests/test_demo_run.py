"""``assistant run`` in local mode starts the WhatsApp stand-in, and ``assistant demo`` talks to it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from app.devtools.local import LOCAL_VERIFY_TOKEN
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_assistant_run_serves_the_webhook_with_a_local_whatsapp_standin_for_the_demo(tmp_path):
    # Given no REDIS_URI, DB_URL, GOOGLE_API_KEY and no WhatsApp settings
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URI", "DB_URL", "GOOGLE_API_KEY") and not k.startswith("WHATSAPP_")}
    port = free_port()
    env.update(DATA_DIR=str(tmp_path / "data"), WEB_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "app.manage", "run", "--threads", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    try:
        def find(pattern):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for line in list(lines):
                    match = re.search(pattern, line)
                    if match:
                        return match
                time.sleep(0.05)
            raise AssertionError(f"{pattern!r} not in output:\n{''.join(lines)}")

        # When it runs, it says where the stand-in is, and writes it down for the demo
        standin_url = find(r"WhatsApp: local stand-in at (http://127\.0\.0\.1:\d+)")[1]
        find(rf"Listening at: http://127\.0\.0\.1:{port}")
        url_file = tmp_path / "data" / "whatsapp-standin.url"
        assert url_file.read_text().strip() == standin_url
        with urllib.request.urlopen(f"{standin_url}/_standin/requests", timeout=5) as resp:
            assert resp.status == 200

        # Then the web app knows the fixed local verify token
        query = f"hub.mode=subscribe&hub.verify_token={LOCAL_VERIFY_TOKEN}&hub.challenge=1158201444"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/webhook?{query}", timeout=5) as resp:
            assert resp.read() == b"1158201444"

        # And the demo's signature (the fixed local app secret) is accepted
        demo = subprocess.run([sys.executable, "-m", "app.manage", "demo", "status_read"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert demo.returncode == 0, demo.stderr
        assert "Webhook answered 200" in demo.stdout and "No reply expected" in demo.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, "".join(lines)
    assert not (tmp_path / "data" / "whatsapp-standin.url").exists()
