"""The image and the compose file: the same commands as the units and the README."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.deploy.files import (
    ROOT,
    SERVICES,
    compose,
    compose_command,
    dockerfile_exec_form,
    dockerfile_instructions,
    exec_start,
    readme,
    unit,
)

#: systemd unit -> the compose service that runs the same process.
UNIT_SERVICES = {
    "whatsapp-web.service": "web",
    "whatsapp-worker.service": "worker",
    "whatsapp-worker-dramatiq.service": "worker-dramatiq",
    "whatsapp-beat.service": "beat",
    "whatsapp-monitor.service": "monitor",
}

APP_SERVICES = ["migrate", "web", "worker", "worker-dramatiq", "beat", "monitor"]


def _same_process(argv: list[str]) -> list[str]:
    """A command without what a unit and a container must differ in: the monitor's
    address (loopback on a host; all interfaces in a container, published on the
    host's loopback) and how the basic-auth secret is spelled for each tool."""
    out = []
    for arg in argv:
        if arg.startswith("--address="):
            continue
        out.append("--basic-auth=<secret>" if arg.startswith("--basic-auth=") else arg)
    return out


def test_compose_runs_every_service_of_the_deployment():
    assert set(compose()["services"]) == {"redis", "postgres", *APP_SERVICES}
    assert set(UNIT_SERVICES) == set(SERVICES)


@pytest.mark.parametrize(("unit_name", "service"), sorted(UNIT_SERVICES.items()))
def test_a_compose_service_runs_its_units_command(unit_name, service):
    assert _same_process(compose_command(service)) == _same_process(exec_start(unit_name))


def test_the_migration_runs_before_the_app_in_both():
    pre = shlex.split(unit("whatsapp-web.service")["Service"]["ExecStartPre"][0])
    assert pre[0].endswith("/assistant") and compose_command("migrate") == ["assistant", *pre[1:]]
    services = compose()["services"]
    for name in APP_SERVICES[1:]:
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["migrate"]["restart"] == "no"


def test_redis_keeps_queued_tasks_across_a_restart_behind_a_password():
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_every_app_service_gets_the_env_file_the_urls_and_a_restart_policy():
    services = compose()["services"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["env_file"] == "../whatsapp-assistant.env", name
        assert "@redis:6379/0" in service["environment"]["REDIS_URI"], name
        assert service["environment"]["DB_URL"].startswith("postgresql://assistant:"), name
        assert service["restart"] == ("no" if name == "migrate" else "always"), name
    assert (ROOT / "deploy" / "whatsapp-assistant.env.example").is_file()


def test_each_role_has_a_health_check_that_fits_it():
    services = compose()["services"]
    # The web app keeps the image's HEALTHCHECK (its /health)
    assert "healthcheck" not in services["web"]
    # A worker pings its own node in the registry
    assert services["worker"]["healthcheck"]["test"] == [
        "CMD-SHELL", "celery -A tasks inspect ping -d celery@$$HOSTNAME -t 5"]
    assert "-d dramatiq.1@$$HOSTNAME" in services["worker-dramatiq"]["healthcheck"]["test"][1]
    assert "/healthcheck" in " ".join(services["monitor"]["healthcheck"]["test"])
    for name in ("beat", "migrate"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_the_monitor_is_published_on_the_hosts_loopback_only():
    monitor = compose()["services"]["monitor"]
    assert monitor["ports"] == ["127.0.0.1:5555:5555"]
    # basic auth from the environment, never argv; the app's variables stay
    assert not any("basic" in arg for arg in monitor["command"])
    assert monitor["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:?set FLOWER_BASIC_AUTH}"
    assert monitor["environment"]["REDIS_URI"] == compose()["services"]["web"]["environment"]["REDIS_URI"]


def test_the_image_is_slim_unprivileged_and_checks_the_web_apps_health():
    instructions = dockerfile_instructions()
    bases = [rest for i, rest in instructions if i == "FROM"]
    assert all(re.match(r"python:3\.11-slim\b", b) for b in bases), bases
    user = [rest for i, rest in instructions if i == "USER"][-1]
    assert user not in ("root", "0")
    healthcheck = [rest for i, rest in instructions if i == "HEALTHCHECK"][-1]
    assert "http://127.0.0.1:5000/health" in healthcheck
    for source in (rest.split()[:-1] for i, rest in instructions if i == "COPY" and "--from" not in rest):
        for path in source:
            assert (ROOT / path).exists(), path


def test_the_images_command_is_the_web_units_and_the_readmes():
    cmd = dockerfile_exec_form("CMD")
    assert cmd == exec_start("whatsapp-web.service") == compose_command("web")
    assert f"`{' '.join(cmd)}`" in readme()


def test_every_command_the_dockerfile_documents_is_the_readmes():
    usages = re.findall(r"^#\s+docker run IMAGE +(?!->)(\S.*?)\s*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert len(usages) >= 5
    text = readme()
    for command in usages:
        assert f"`{command}`" in text, command


def test_the_worker_lines_of_the_readme_are_the_deployments():
    text = readme()
    for name in ("whatsapp-worker.service", "whatsapp-worker-dramatiq.service", "whatsapp-beat.service",
                 "whatsapp-monitor.service"):
        assert f"`{' '.join(exec_start(name))}`" in text, name
