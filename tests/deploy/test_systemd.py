"""The systemd units: systemd-analyze accepts them, and they run what the CLIs accept."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.files import (
    ROOT,
    SERVICES,
    SYSTEMD,
    TEST_VENV_BIN,
    UNIT_VENV_BIN,
    exec_start,
    runs_a_worker,
    service_value,
    unit,
)

ALL_UNITS = sorted(p.name for p in SYSTEMD.iterdir() if p.suffix in (".service", ".timer"))


def _verify(directory: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", f"./{name}"], cwd=directory,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed_units(tmp_path_factory) -> Path:
    """The units as installed here: copies whose programs are this test run's virtualenv scripts.

    systemd-analyze checks that every ExecStart program exists and is executable;
    the units name /srv/assistant/.venv/bin/..., the README's layout.
    """
    directory = tmp_path_factory.mktemp("units")
    for name in ALL_UNITS:
        text = (SYSTEMD / name).read_text()
        (directory / name).write_text(text.replace(UNIT_VENV_BIN, TEST_VENV_BIN))
    return directory


def test_the_units_are_all_there():
    assert set(ALL_UNITS) == {
        "whatsapp-web.service", "whatsapp-worker.service", "whatsapp-worker-dramatiq.service",
        "whatsapp-beat.service", "whatsapp-monitor.service",
        "whatsapp-worker-restart.service", "whatsapp-worker-restart.timer",
    }


@pytest.mark.parametrize("name", ALL_UNITS)
def test_systemd_analyze_verifies_the_unit_without_a_warning(name, installed_units):
    # Given the unit with its programs where this machine has them
    for key in ("ExecStart", "ExecStartPre"):
        for line in unit(name)["Service"].get(key, []) if name.endswith(".service") else []:
            program = shlex.split(line.replace(UNIT_VENV_BIN, TEST_VENV_BIN))[0]
            assert Path(program).is_file(), f"{name}: {program} is not installed here"
    # When systemd checks it
    result = _verify(installed_units, name)
    # Then it has nothing to say
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_systemd_analyze_verify_does_complain_here(tmp_path):
    # The check above is only worth something if verify reports what it finds on this machine.
    (tmp_path / "broken.service").write_text(
        "[Service]\nExecStart=/nonexistent/celery -A tasks worker\nKillMode=mixd\nNoSuchKey=1\n")
    result = _verify(tmp_path, "broken.service")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "/nonexistent/celery" in output and "mixd" in output and "NoSuchKey" in output


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_restarts_is_limited_and_hardened(name):
    service = unit(name)["Service"]
    assert service["Restart"] == ["always"]
    assert service["User"] == ["assistant"] and service["Group"] == ["assistant"]
    # SIGTERM to the main process, which stops its own children; SIGKILL to all only after TimeoutStopSec.
    assert service["KillMode"] == ["mixed"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["MemoryMax"] and service["CPUQuota"] and service["MemoryHigh"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "RestrictNamespaces": "yes",
                       "CapabilityBoundingSet": "", "SystemCallFilter": "@system-service"}.items():
        assert service.get(key) == [value], f"{name}: {key}"
    assert service["EnvironmentFile"] == ["/etc/whatsapp-assistant/env"]


@pytest.mark.parametrize("name", SERVICES)
def test_a_service_that_writes_files_has_a_directory_for_them(name):
    # ProtectSystem=strict makes everything read-only: prometheus_client's multiprocess
    # directory must be one the unit gets writable (its RuntimeDirectory).
    service = unit(name)["Service"]
    multiproc = [e.split("=", 1)[1] for e in service.get("Environment", [])
                 if e.split("=", 1)[0] in ("WEB_METRICS_DIR", "WORKER_METRICS_DIR")]
    runtime = " ".join(service.get("RuntimeDirectory", [])).split()
    if name.startswith(("whatsapp-web.", "whatsapp-worker.", "whatsapp-worker-dramatiq.")):
        assert multiproc, f"{name} keeps its metric files in the private /tmp"
    for directory in multiproc:
        assert directory.startswith("/run/") and directory[len("/run/"):] in runtime, name


def test_the_worker_units_tell_systemd_when_they_serve():
    # The facade says READY=1 from its main process (actors/sd_notify.py); plain Dramatiq cannot.
    assert service_value("whatsapp-worker.service", "Type") == "notify"
    assert service_value("whatsapp-worker.service", "NotifyAccess") == "main"
    for name in set(SERVICES) - {"whatsapp-worker.service"}:
        assert service_value(name, "Type") == "exec", name


def _parse_celery(argv: list[str]):
    from facade.cli import _parser

    return _parser().parse_args(argv[1:])


def _parse_dramatiq(argv: list[str]):
    from dramatiq.cli import make_argument_parser

    return make_argument_parser().parse_args(argv[1:])


def test_the_celery_worker_unit_runs_the_runbook_line():
    argv = exec_start("whatsapp-worker.service")
    assert " ".join(argv) == ("celery -A tasks worker -l info --concurrency=4 --max-tasks-per-child=100 "
                              "--time-limit=300 --soft-time-limit=240 -Q default,state")
    args = _parse_celery(argv)
    assert (args.command, args.app, args.queues, args.time_limit) == ("worker", "tasks", "default,state", 300)


def test_the_dramatiq_unit_runs_the_actors_on_both_queues_with_a_bounded_shutdown():
    argv = exec_start("whatsapp-worker-dramatiq.service")
    args = _parse_dramatiq(argv)
    assert args.broker == "actors"
    assert sorted(args.queues) == ["default", "state"]
    assert (args.processes, args.threads) == (2, 4)
    # Dramatiq's default (10 minutes) would outlast systemd's TimeoutStopSec.
    from actors.worker_spec import shutdown_timeout_s

    assert args.worker_shutdown_timeout == shutdown_timeout_s(300) * 1000


def test_beat_and_the_web_app_run_what_their_clis_accept():
    args = _parse_celery(exec_start("whatsapp-beat.service"))
    assert (args.command, args.app) == ("beat", "tasks")
    web = exec_start("whatsapp-web.service")
    assert web[:2] == ["gunicorn", "wsgi:app"] and web[web.index("--bind") + 1] == "0.0.0.0:5000"
    assert unit("whatsapp-web.service")["Service"]["ExecStartPre"] == [f"{UNIT_VENV_BIN}assistant migrate"]


def test_the_monitor_listens_on_loopback_port_5555_with_basic_auth_from_the_env_file():
    argv = exec_start("whatsapp-monitor.service")
    assert argv[:4] == ["celery", "-A", "tasks", "flower"]
    assert "--port=5555" in argv and "--address=127.0.0.1" in argv
    # the monitor reads FLOWER_BASIC_AUTH from the EnvironmentFile itself: no secret in argv (ps)
    assert not any("basic" in arg or "FLOWER_BASIC_AUTH" in arg for arg in argv), argv
    assert unit("whatsapp-monitor.service")["Service"]["EnvironmentFile"] == ["/etc/whatsapp-assistant/env"]
    assert "FLOWER_BASIC_AUTH=" in (ROOT / "deploy" / "whatsapp-assistant.env.example").read_text()


@pytest.mark.parametrize(("env", "starts"), [({}, False), ({"FLOWER_BASIC_AUTH": ""}, False),
                                             ({"FLOWER_BASIC_AUTH": "admin:pw"}, True)])
def test_the_monitor_does_not_start_without_basic_auth(env, starts):
    # The ExecStartPre guard, run as systemd runs it ($$ is a literal $)
    pre = unit("whatsapp-monitor.service")["Service"]["ExecStartPre"][0].replace("$$", "$")
    result = subprocess.run(shlex.split(pre), env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode == 0) is starts
    assert ("FLOWER_BASIC_AUTH is not set" in result.stderr) is not starts


def test_the_restart_timer_restarts_every_worker_unit_and_waits_for_its_warm_shutdown():
    restart = unit("whatsapp-worker-restart.service")["Service"]
    assert restart["Type"] == ["oneshot"]
    command = shlex.split(restart["ExecStart"][0])
    assert command[:2] == ["/usr/bin/systemctl", "try-restart"]
    workers = {name for name in SERVICES if runs_a_worker(exec_start(name))}
    assert set(command[2:]) == workers
    timeout_min = int(restart["TimeoutStartSec"][0].removesuffix("min"))
    for name in workers:
        assert timeout_min * 60 > int(service_value(name, "TimeoutStopSec")) + 120, name
    timer = unit("whatsapp-worker-restart.timer")
    assert timer["Timer"]["Unit"] == ["whatsapp-worker-restart.service"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    # systemd-analyze calendar understands the schedule
    calendar = subprocess.run(["systemd-analyze", "calendar", timer["Timer"]["OnCalendar"][0]],
                              capture_output=True, text=True, timeout=60)
    assert calendar.returncode == 0 and "Next elapse" in calendar.stdout, calendar.stderr


def test_systemd_analyze_is_on_the_machine():
    # Not a skip: without it the unit checks above cannot run, and that is a failure.
    assert shutil.which("systemd-analyze"), "install systemd (systemd-analyze) to check the units"


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_rates_every_service_exposure_ok(name, installed_units):
    # systemd-analyze security scores the sandbox from 0 (locked down) to 10; below 2 is
    # "OK" (an unhardened service scores 9.6).  --threshold is that score times ten.
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", f"./{name}"],
                            cwd=installed_units, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert f"Overall exposure level for {name}: 1." in result.stdout
