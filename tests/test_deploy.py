"""The deployment files give a worker the time its warm shutdown takes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _warm_shutdown_budget_s(command: str) -> float:
    from actors.supervisor import _SHUTDOWN_SLACK_S
    from actors.worker_spec import shutdown_timeout_s

    hard = float(re.search(r"--time-limit[= ](\d+)", command).group(1))
    return shutdown_timeout_s(hard) + _SHUTDOWN_SLACK_S


@pytest.mark.parametrize(("path", "stop_pattern"), [
    ("deploy/systemd/whatsapp-worker.service", r"^TimeoutStopSec=(\d+)$"),
    ("deploy/docker/compose.yml", r"^\s+stop_grace_period: (\d+)s$"),
])
def test_the_stop_timeout_outlasts_the_workers_warm_shutdown(path, stop_pattern):
    text = (ROOT / path).read_text()
    worker = text if path.endswith(".service") else text[text.index("  worker:"):]
    stop_s = float(re.search(stop_pattern, worker, re.MULTILINE).group(1))
    assert stop_s > _warm_shutdown_budget_s(worker)


@pytest.mark.parametrize(("env", "bind"), [({}, "['0.0.0.0:5000']"), ({"WEB_PORT": "5100"}, "['0.0.0.0:5100']")])
def test_a_bare_gunicorn_in_the_project_root_serves_port_5000(env, bind):
    import os
    import subprocess
    import sys

    gunicorn = Path(sys.executable).parent / "gunicorn"
    printed = subprocess.run([str(gunicorn), "--print-config", "wsgi:app"], cwd=ROOT, capture_output=True,
                             text=True, env={k: v for k, v in os.environ.items() if k != "WEB_PORT"} | env,
                             check=True).stdout
    settings = dict(re.findall(r"^(\w+)\s+= (.*)$", printed, re.MULTILINE))
    assert settings["bind"] == bind
    # the path without its query: Meta's handshake puts hub.verify_token there
    assert "%(U)s" in settings["access_log_format"] and "%(r)s" not in settings["access_log_format"]
