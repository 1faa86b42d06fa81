"""The deployment files give a worker the time its warm shutdown takes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _warm_shutdown_budget_s(argv: list[str]) -> float:
    """How long a worker started with ``argv`` may take to stop after SIGTERM."""
    from actors.supervisor import _SHUTDOWN_SLACK_S
    from actors.worker_spec import shutdown_timeout_s

    if argv[:2] == ["dramatiq", "actors"]:
        # Each process waits --worker-shutdown-timeout (ms) for its tasks; the main one then exits.
        timeout_ms = float(argv[argv.index("--worker-shutdown-timeout") + 1])
        assert timeout_ms / 1000 >= shutdown_timeout_s(300), "running tasks would be cut short"
        return timeout_ms / 1000
    hard = next((float(a.split("=", 1)[1]) for a in argv if a.startswith("--time-limit=")), 300.0)
    return shutdown_timeout_s(hard) + _SHUTDOWN_SLACK_S


def _worker_stop_timeouts() -> list[tuple[str, list[str], float]]:
    """(where, command, stop timeout in seconds) of every unit and compose service that runs a worker."""
    from tests.deploy.files import SERVICES, compose, compose_command, exec_start, runs_a_worker, service_value

    found = [(name, exec_start(name), float(service_value(name, "TimeoutStopSec")))
             for name in SERVICES if runs_a_worker(exec_start(name))]
    for name, service in compose()["services"].items():
        if "command" in service and runs_a_worker(compose_command(name)):
            grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"]).group(1)
            found.append((f"compose:{name}", compose_command(name), float(grace)))
    return found


def test_every_unit_and_service_that_runs_a_worker_is_checked():
    assert sorted(where for where, _, _ in _worker_stop_timeouts()) == [
        "compose:worker", "compose:worker-dramatiq", "whatsapp-worker-dramatiq.service", "whatsapp-worker.service"]


@pytest.mark.parametrize(("where", "argv", "stop_s"), _worker_stop_timeouts(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_the_stop_timeout_outlasts_the_workers_warm_shutdown(where, argv, stop_s):
    assert stop_s > _warm_shutdown_budget_s(argv), where


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
